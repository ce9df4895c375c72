// Lanczos-3 resizing of a square RGBA image, the filter photos.py resizes photos with (PIL's
// LANCZOS), so the page shows the model a photo prepared as the training photos were.
//
// Separable: rows first, then columns. Each output pixel's centre maps back into the input and
// takes the input pixels within 3 of its own widths, weighted by the Lanczos window stretched
// by the scale (so a downscale averages instead of aliasing) and normalised to sum to 1. PIL
// rounds to 8 bits between the passes and in fixed point; this stays in floating point, which
// moves a few pixels by a level.

const SUPPORT = 3;

const sinc = (x) => (x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x));
const lanczos = (x) => (Math.abs(x) < SUPPORT ? sinc(x) * sinc(x / SUPPORT) : 0);

// For each output index: the first input index and the normalised weights from there on.
function weights(from, to) {
  const scale = from / to;
  const stretch = Math.max(scale, 1);
  const support = SUPPORT * stretch;
  return Array.from({ length: to }, (_, out) => {
    const centre = (out + 0.5) * scale;
    const first = Math.max(0, Math.floor(centre - support + 0.5));
    const last = Math.min(from, Math.floor(centre + support + 0.5));
    const taps = Array.from({ length: last - first }, (_, i) =>
      lanczos((first + i - centre + 0.5) / stretch),
    );
    const total = taps.reduce((a, b) => a + b, 0);
    return { first, taps: taps.map((w) => w / total) };
  });
}

// RGBA bytes [from * from * 4] to RGBA bytes [to * to * 4], opaque.
export function resizeSquare(rgba, from, to) {
  const filter = weights(from, to);
  const rows = new Float32Array(from * to * 3); // [from rows][to cols][3]
  for (let y = 0; y < from; y++) {
    filter.forEach(({ first, taps }, x) => {
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let i = 0; i < taps.length; i++) sum += taps[i] * rgba[(y * from + first + i) * 4 + c];
        rows[(y * to + x) * 3 + c] = sum;
      }
    });
  }
  const out = new Uint8ClampedArray(to * to * 4).fill(255); // clipped and rounded on assignment
  filter.forEach(({ first, taps }, y) => {
    for (let x = 0; x < to; x++) {
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let i = 0; i < taps.length; i++) sum += taps[i] * rows[((first + i) * to + x) * 3 + c];
        out[(y * to + x) * 4 + c] = sum;
      }
    }
  });
  return out;
}
