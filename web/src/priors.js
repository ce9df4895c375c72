// Where codes come from before decoding: the page's mirror of runtime/prior.py.
//
// Each prior's sample(n, streams, temperature) reads its random numbers from the streams of
// random.js exactly as its Python twin reads numpy's: the mixture takes one uniform per bird
// from `picks`, then every prior fills its Gaussian noise row by row from `noise`. Codes are
// Float32Array [n * D], row-major, as the decoder takes them.

import { NpzError, readNpz } from './npz.js';
import { MAX_TEMPERATURE, ModelError } from './manifest.js';

export function checkTemperature(value, what = 'temperature', max = MAX_TEMPERATURE) {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > max) {
    throw new RangeError(`${what} must be a number from 0 to ${max}, got ${value}`);
  }
  return value;
}

// N(0, I), the prior the VAE was trained against: z = T * eps.
export class StandardNormal {
  constructor(latentDim) {
    this.latentDim = latentDim;
  }

  async sample(n, streams, temperature) {
    const z = streams.noise.fillNormal(new Float64Array(n * this.latentDim));
    return Float32Array.from(z, (e) => temperature * e);
  }
}

// sum_k w_k N(mean_k, L_k L_k^T); temperature T scales each draw's deviation from its mean.
export class GaussianMixture {
  // weights [K], means [K * D], cholesky [K * D * D]: checked as GaussianMixture.__init__ does.
  constructor(weights, means, cholesky, latentDim) {
    const k = weights.length;
    const d = latentDim;
    if (k === 0 || means.length !== k * d || cholesky.length !== k * d * d) {
      throw new ModelError(`${k} mixture weights need means [${k}, ${d}] and cholesky [${k}, ${d}, ${d}]`);
    }
    for (const array of [weights, means, cholesky]) {
      if (!array.every(Number.isFinite)) throw new ModelError('mixture arrays hold NaN or infinite values');
    }
    const total = weights.reduce((a, b) => a + b, 0);
    if (weights.some((w) => w < 0) || !(total > 0))
      throw new ModelError('mixture weights must be >= 0 with a positive sum');
    for (let c = 0; c < k; c++) {
      for (let row = 0; row < d; row++) {
        const base = (c * d + row) * d;
        if (!(cholesky[base + row] > 0))
          throw new ModelError('mixture cholesky factors need a positive diagonal');
        for (let col = row + 1; col < d; col++) {
          if (cholesky[base + col] !== 0)
            throw new ModelError('mixture cholesky factors must be lower-triangular');
        }
      }
    }
    this.latentDim = d;
    this.means = means;
    this.cholesky = cholesky;
    let running = 0; // the cumulative weights, as np.cumsum of the normalised weights
    this.cdf = Float64Array.from(weights, (w) => (running += w / total));
  }

  // prior.npz's bytes (already checked against the manifest) as a mixture of `components`.
  static async fromNpz(bytes, components, latentDim) {
    const [k, d] = [components, latentDim];
    // float64 is the most an array may need; anything larger is refused before inflating.
    const header = 4096;
    let arrays;
    try {
      arrays = await readNpz(bytes, {
        weights: header + 8 * k,
        means: header + 8 * k * d,
        cholesky: header + 8 * k * d * d,
      });
    } catch (error) {
      // as runtime/prior.py: the model's fault, named, not "something went wrong"
      if (error instanceof NpzError) throw new ModelError(`prior.npz is not a valid prior: ${error.message}`);
      throw error;
    }
    const expected = { weights: [k], means: [k, d], cholesky: [k, d, d] };
    for (const [name, shape] of Object.entries(expected)) {
      if (arrays[name].shape.join() !== shape.join()) {
        throw new ModelError(
          `prior.npz ${name} has shape [${arrays[name].shape}], the manifest needs [${shape}]`,
        );
      }
    }
    return new GaussianMixture(arrays.weights.data, arrays.means.data, arrays.cholesky.data, d);
  }

  // The component a uniform u picks: the first whose cumulative weight exceeds u
  // (np.searchsorted side="right"), the last one for a u past a rounded-down total.
  pick(u) {
    let low = 0;
    let high = this.cdf.length - 1;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (this.cdf[middle] > u) high = middle;
      else low = middle + 1;
    }
    return low;
  }

  async sample(n, streams, temperature) {
    const d = this.latentDim;
    const picks = Array.from({ length: n }, () => this.pick(streams.picks.uniform()));
    const eps = streams.noise.fillNormal(new Float64Array(n * d));
    const z = new Float32Array(n * d);
    for (let i = 0; i < n; i++) {
      const mean = picks[i] * d;
      const factor = picks[i] * d * d;
      for (let row = 0; row < d; row++) {
        let deviation = 0; // (L eps)[row]: the factor is lower-triangular, so col <= row
        for (let col = 0; col <= row; col++)
          deviation += this.cholesky[factor + row * d + col] * eps[i * d + col];
        z[i * d + row] = this.means[mean + row] + temperature * deviation;
      }
    }
    return z;
  }
}

// A learned sampler: z = f(T * eps) with eps standard normal [n, noise_dim]. `run` is the
// graph (prior.onnx); it is deterministic, so the noise drawn here is all the randomness.
// As in runtime/prior.py, the graph always runs on BLOCK_ROWS rows: an int8 sampler quantizes
// its activations over the whole batch, so fixed blocks keep a seed's birds whatever n is.
export const BLOCK_ROWS = 64;

export class LearnedPrior {
  constructor(run, noiseDim) {
    this.run = run;
    this.noiseDim = noiseDim;
  }

  async sample(n, streams, temperature) {
    const blocks = [];
    for (let start = 0; start < n; start += BLOCK_ROWS) {
      const eps = streams.noise.fillNormal(new Float64Array(BLOCK_ROWS * this.noiseDim));
      blocks.push(
        await this.run(
          Float32Array.from(eps, (e) => temperature * e),
          BLOCK_ROWS,
        ),
      );
    }
    if (blocks.length === 0) return new Float32Array(0);
    const width = blocks[0].length / BLOCK_ROWS;
    const z = new Float32Array(blocks.length * BLOCK_ROWS * width);
    blocks.forEach((block, i) => z.set(block, i * block.length));
    return z.slice(0, n * width);
  }
}
