// Best of k: the page's mirror of runtime/selection.py. Of k birds drawn for one place, keep the
// one the rater rates highest: a small network (rater.onnx, shipped beside the models) that
// predicts the score a blind rater gives a picture, 2 clearly a bird to 0 not a bird.

export const MAX_BEST_OF = 16;
export const RATER_FOLDER = 'rater32'; // beside the model folders, as in the package
export const RATER_FILE = 'rater.onnx';
export const RATER_INPUT = 'image'; // float32 [N, 3, 32, 32] in [0, 1]
export const RATER_OUTPUT = 'rating'; // float32 [N]
export const RATER_SIZE = 32;
export const MAX_RATER_BYTES = 4 << 20;
// runtime/selection.py's RATER_SHA256: a damaged file that still parses would change the choice.
export const RATER_SHA256 = 'd75e0774ded4b1453b6e15770c8d1d1eb45775c7be7714ddfb5861bf1062059e';

// [out, size], row-major: row i averages the part of [0, size) that output pixel i covers.
export function areaMatrix(size, out) {
  const matrix = new Float32Array(out * size);
  const step = size / out;
  for (let i = 0; i < out; i++) {
    let total = 0;
    for (let p = 0; p < size; p++) {
      const overlap = Math.max(0, Math.min((i + 1) * step, p + 1) - Math.max(i * step, p));
      matrix[i * size + p] = overlap;
      total += overlap;
    }
    for (let p = 0; p < size; p++) matrix[i * size + p] /= total;
  }
  return matrix;
}

// n images [n, 3, S, S] in [0, 1] resampled by area to the rater's [n, 3, 32, 32].
export function toRaterSize(images, n, size) {
  if (size === RATER_SIZE) return images;
  const area = areaMatrix(size, RATER_SIZE);
  const out = new Float32Array(n * 3 * RATER_SIZE * RATER_SIZE);
  const rows = new Float32Array(RATER_SIZE * size); // one plane averaged along its height
  for (let plane = 0; plane < n * 3; plane++) {
    const base = plane * size * size;
    rows.fill(0);
    for (let i = 0; i < RATER_SIZE; i++)
      for (let y = 0; y < size; y++) {
        const weight = area[i * size + y];
        if (weight === 0) continue;
        for (let x = 0; x < size; x++) rows[i * size + x] += weight * images[base + y * size + x];
      }
    const at = plane * RATER_SIZE * RATER_SIZE;
    for (let i = 0; i < RATER_SIZE; i++)
      for (let j = 0; j < RATER_SIZE; j++) {
        let sum = 0;
        for (let x = 0; x < size; x++) sum += area[j * size + x] * rows[i * size + x];
        out[at + i * RATER_SIZE + j] = sum;
      }
  }
  return out;
}

// Of each k consecutive images [n * k, 3, S, S], the one with the highest score: [n, 3, S, S].
export function chooseBest(images, scores, k, size) {
  if (k === 1) return images;
  const length = 3 * size * size;
  const n = scores.length / k;
  const out = new Float32Array(n * length);
  for (let b = 0; b < n; b++) {
    let best = b * k;
    for (let j = b * k + 1; j < (b + 1) * k; j++) if (scores[j] > scores[best]) best = j;
    out.set(images.subarray(best * length, (best + 1) * length), b * length);
  }
  return out;
}
