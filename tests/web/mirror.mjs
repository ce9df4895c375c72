// The node side of test_mirrors.py: node mirror.mjs CASE < input.json > output.json
//
// Each case runs the page's own modules (web/src) on the JSON it is given and prints JSON; the
// Python side feeds the same numbers to the runtime and compares.

import { readFileSync } from "node:fs";
import { GUTTER, grid, gridShape, psnr, row } from "../../web/src/figure.js";
import * as format from "../../web/src/manifest.js";
import {
  defaultTemperature,
  parseManifest,
  priorNames,
} from "../../web/src/manifest.js";
import { readNpz } from "../../web/src/npz.js";
import { checkFormat } from "../../web/src/photo.js";
import { checkGraph } from "../../web/src/onnxfile.js";
import { drawPixels, toTiles } from "../../web/src/pixels.js";
import {
  GaussianMixture,
  LearnedPrior,
  StandardNormal,
} from "../../web/src/priors.js";
import { Xoshiro128, draws } from "../../web/src/random.js";
import * as selection from "../../web/src/selection.js";
import { chooseBest, toRaterSize } from "../../web/src/selection.js";

// A stand-in for random.js's streams: hands out the given uniforms and normals in order.
function stream(uniforms = [], normals = []) {
  let u = 0;
  let g = 0;
  return {
    uniform: () => uniforms[u++],
    fillNormal(array) {
      for (let i = 0; i < array.length; i++) array[i] = normals[g++];
      return array;
    },
  };
}

const floats = (nested) => Float32Array.from(nested.flat(Infinity));
const failure = (error) => `${error.name}: ${error.message}`;
const take = (generator, n) =>
  Array.from({ length: n }, () => generator.nextUint32());

const cases = {
  published({ state, n }) {
    return take(new Xoshiro128(...state), n);
  },

  streams({ seed, n }) {
    const { picks, noise, pixels } = draws(seed);
    const again = draws(seed).noise;
    return {
      words: [take(picks, n), take(noise, n), take(pixels, n)],
      uniform: again.uniform(),
      normals: [again.normal(), again.normal()],
    };
  },

  normals({ seed, n }) {
    return Array.from(draws(seed).noise.fillNormal(new Float64Array(n)));
  },

  badSeeds({ seeds }) {
    return seeds.map((seed) => {
      try {
        draws(seed === "NaN" ? NaN : seed);
        return null;
      } catch (error) {
        return failure(error);
      }
    });
  },

  async priors({
    n,
    d,
    temperature,
    weights,
    means,
    cholesky,
    uniforms,
    normals,
    noiseDim,
  }) {
    const mixture = new GaussianMixture(
      floats(weights),
      floats(means),
      floats(cholesky),
      d,
    );
    const twice = async (noise) => noise.map((x) => 2 * x);
    const sample = (prior, picks = []) =>
      prior
        .sample(
          n,
          { picks: stream(picks), noise: stream([], normals) },
          temperature,
        )
        .then(Array.from);
    return {
      fitted: await sample(mixture, uniforms),
      standard: await sample(new StandardNormal(d)),
      learned: await sample(new LearnedPrior(twice, noiseDim)),
    };
  },

  badMixtures(mixtures) {
    return Object.fromEntries(
      Object.entries(mixtures).map(([name, { arrays, nanAt }]) => {
        const [weights, means, cholesky] = arrays.map(floats);
        if (nanAt !== undefined) means[nanAt] = NaN; // JSON has no NaN
        try {
          new GaussianMixture(
            weights,
            means,
            cholesky,
            means.length / weights.length,
          );
          return [name, null];
        } catch (error) {
          return [name, failure(error)];
        }
      }),
    );
  },

  pixels({ location, scale, coupling, noise, uniforms, n, size }) {
    const rng = stream(uniforms);
    return Array.from(
      drawPixels(
        floats(location),
        floats(scale),
        floats(coupling),
        noise,
        rng,
        n,
        size,
      ),
    );
  },

  figures({ batch, n, size, grids }) {
    const tiles = toTiles(floats(batch), n, size);
    return {
      gutter: GUTTER,
      tiles: tiles.map((tile) => Array.from(tile)),
      grids: grids.map(([count, scale]) =>
        Array.from(grid(tiles.slice(0, count), size, scale).data),
      ),
      row: Array.from(row(tiles.slice(0, 2), size, 2).data),
      shapes: Array.from({ length: 300 }, (_, i) => gridShape(i + 1)),
      psnr: psnr(tiles[0], tiles[1]),
    };
  },

  selection({ images, n, size, k, scores }) {
    const data = Float32Array.from(images);
    return {
      small: Array.from(toRaterSize(data, n, size)),
      best: Array.from(chooseBest(data, Float32Array.from(scores), k, size)),
    };
  },

  // The page's copies of the format's and the rater's constants (web/src cannot import Python).
  constants() {
    const shared = Object.entries({ ...format, ...selection }).filter(
      ([name, value]) =>
        /^[A-Z][A-Z0-9_]*$/.test(name) && typeof value !== "function",
    );
    return Object.fromEntries(shared);
  },

  manifests(variants) {
    return Object.fromEntries(
      Object.entries(variants).map(([name, data]) => {
        try {
          const manifest = parseManifest(JSON.stringify(data));
          const names = priorNames(manifest);
          return [
            name,
            {
              names,
              temperatures: names.map((prior) =>
                defaultTemperature(manifest, prior),
              ),
            },
          ];
        } catch (error) {
          return [name, failure(error)];
        }
      }),
    );
  },

  manifestTexts(texts) {
    return Object.fromEntries(
      Object.entries(texts).map(([name, text]) => {
        try {
          return [name, priorNames(parseManifest(text))];
        } catch (error) {
          return [name, failure(error)];
        }
      }),
    );
  },

  graphs(files) {
    return Object.fromEntries(
      Object.entries(files).map(([name, hex]) => {
        try {
          checkGraph(new Uint8Array(Buffer.from(hex, "hex")), "prior.onnx");
          return [name, "loads"];
        } catch (error) {
          return [name, failure(error)];
        }
      }),
    );
  },

  async fitted({ hex, components, latentDim }) {
    const bytes = new Uint8Array(Buffer.from(hex, "hex"));
    try {
      await GaussianMixture.fromNpz(bytes, components, latentDim);
      return "loads";
    } catch (error) {
      return failure(error);
    }
  },

  async npz({ files, limits }) {
    const result = {};
    for (const [name, hex] of Object.entries(files)) {
      try {
        const arrays = await readNpz(
          new Uint8Array(Buffer.from(hex, "hex")),
          limits[name],
        );
        result[name] = Object.fromEntries(
          Object.entries(arrays).map(([key, { shape, data }]) => [
            key,
            {
              shape,
              type: data.constructor.name,
              sum: data.reduce((s, x) => s + x, 0),
              head: Array.from(data.subarray(0, 50)),
            },
          ]),
        );
      } catch (error) {
        result[name] = failure(error);
      }
    }
    return result;
  },
};

cases.photoFiles = async (files) => {
  const result = {};
  for (const [name, hex] of Object.entries(files)) {
    try {
      await checkFormat(new Blob([Buffer.from(hex, "hex")]), name);
      result[name] = null;
    } catch (error) {
      result[name] = failure(error);
    }
  }
  return result;
};

const [name] = process.argv.slice(2);
if (!Object.hasOwn(cases, name))
  throw new Error(
    `no case ${name}; the cases are ${Object.keys(cases).join(", ")}`,
  );
console.log(
  JSON.stringify(await cases[name](JSON.parse(readFileSync(0, "utf8")))),
);
