// Pixel noise and pixels out: the page's mirror of runtime/pixels.py and images.to_uint8_hwc.

import { MAX_NOISE } from './manifest.js';
import { checkTemperature } from './priors.js';

// Uniforms are kept off 0 and 1, where the logistic's inverse CDF is infinite, by the bounds
// numpy clips its float32 uniforms to: 1e-6 and 1 - 1e-6 rounded to float32.
const LOW = Math.fround(1e-6);
const HIGH = Math.fround(1 - 1e-6);

export const checkNoise = (noise) => checkTemperature(noise, 'pixel noise', MAX_NOISE);

const clip = (x) => Math.min(1, Math.max(0, x));

// Images [n, 3, S, S] in [0, 1] drawn at temperature `noise` from the decoder's logistic per
// sub-pixel (location: its centre before clipping, scale, and the colour couplings). The
// uniforms are taken in the arrays' own order, [n, 3, S, S] row-major, as numpy fills them.
// Red is drawn first; green moves by coupling[0] times red's deviation, blue by coupling[1]
// times red's and coupling[2] times green's, each taken after clipping.
export function drawPixels(location, scale, coupling, noise, rng, n, size) {
  const plane = size * size;
  const own = new Float64Array(location.length);
  for (let i = 0; i < own.length; i++) {
    const u = Math.min(HIGH, Math.max(LOW, rng.uniform()));
    own[i] = noise * scale[i] * (Math.log(u) - Math.log1p(-u));
  }
  const out = new Float32Array(location.length);
  for (let b = 0; b < n; b++) {
    const [r, g, bl] = [0, 1, 2].map((c) => (b * 3 + c) * plane);
    for (let p = 0; p < plane; p++) {
      const red = clip(location[r + p] + own[r + p]);
      const redShift = red - location[r + p];
      const green = clip(location[g + p] + own[g + p] + coupling[r + p] * redShift);
      const greenShift = green - location[g + p];
      out[r + p] = red;
      out[g + p] = green;
      out[bl + p] = clip(
        location[bl + p] + own[bl + p] + coupling[g + p] * redShift + coupling[bl + p] * greenShift,
      );
    }
  }
  return out;
}

// Model images, float32 [n, 3, S, S] in [0, 1], as n tiles of RGBA bytes [S * S * 4], the bytes
// images.to_uint8_hwc makes: the product rounded to float32 as numpy computes it, then a
// Uint8ClampedArray's own conversion, which clips and rounds half to even as np.rint does.
export function toTiles(images, n, size) {
  const plane = size * size;
  return Array.from({ length: n }, (_, b) => {
    const tile = new Uint8ClampedArray(plane * 4);
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < 3; c++) tile[p * 4 + c] = Math.fround(images[(b * 3 + c) * plane + p] * 255);
      tile[p * 4 + 3] = 255;
    }
    return tile;
  });
}
