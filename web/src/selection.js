// Best of k: the page's mirror of runtime/selection.py. Of k birds drawn for one place, keep the
// one standing out most clearly from a plain background, the pictures raters call birds.

export const MAX_BEST_OF = 16;
const CONTRAST_WEIGHT = 0.5;

// Scores of n images [n, 3, S, S] in [0, 1], row-major: edges in the middle, minus edges at the
// border, plus half the distance between the middle's and the border's mean colours.
export function figureGround(images, n, size) {
  const plane = size * size;
  const inset = Math.max(1, Math.floor((size * 5) / 32));
  const quarter = Math.floor(size / 4);
  // Each pixel's region: 0 the middle, 1 the border, -1 neither (the two never overlap).
  const region = new Int8Array(plane).fill(-1);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const inner = (v) => v >= quarter && v < size - quarter;
      const outer = (v) => v < inset || v >= size - inset;
      if (inner(y) && inner(x)) region[y * size + x] = 0;
      else if (outer(y) || outer(x)) region[y * size + x] = 1;
    }
  }
  const scores = new Float64Array(n);
  const gray = new Float64Array(plane);
  for (let b = 0; b < n; b++) {
    const base = b * 3 * plane;
    for (let p = 0; p < plane; p++)
      gray[p] = (images[base + p] + images[base + plane + p] + images[base + 2 * plane + p]) / 3;
    const edges = [0, 0];
    const counts = [0, 0];
    const colours = [
      [0, 0, 0],
      [0, 0, 0],
    ];
    for (let p = 0; p < plane; p++) {
      const r = region[p];
      if (r < 0) continue;
      const x = p % size;
      if (x < size - 1) edges[r] += Math.abs(gray[p + 1] - gray[p]);
      if (p + size < plane) edges[r] += Math.abs(gray[p + size] - gray[p]);
      counts[r] += 1;
      for (let c = 0; c < 3; c++) colours[r][c] += images[base + c * plane + p];
    }
    const contrast = Math.hypot(
      ...[0, 1, 2].map((c) => colours[0][c] / counts[0] - colours[1][c] / counts[1]),
    );
    scores[b] = edges[0] / counts[0] - edges[1] / counts[1] + CONTRAST_WEIGHT * contrast;
  }
  return scores;
}

// Of each k consecutive images [n * k, 3, S, S], the one figureGround scores highest: [n, 3, S, S].
export function bestOf(images, k, size) {
  if (k === 1) return images;
  const length = 3 * size * size;
  const n = images.length / length / k;
  const scores = figureGround(images, n * k, size);
  const out = new Float32Array(n * length);
  for (let b = 0; b < n; b++) {
    let best = b * k;
    for (let j = b * k + 1; j < (b + 1) * k; j++) if (scores[j] > scores[best]) best = j;
    out.set(images.subarray(best * length, (best + 1) * length), b * length);
  }
  return out;
}
