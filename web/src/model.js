// A model folder on the web, as runtime/model.py's BirdVAE: sample, decode, encode.
//
// Every file is fetched by its format name, refused unless its size and sha256 are the
// manifest's, and those very bytes go to onnxruntime or the .npz reader. Each graph's signature
// is checked before it is used, so a damaged or foreign model fails with one ModelError that
// says what is wrong. Files are fetched when first needed (sampling never needs the encoder);
// `Model.load` fetches what a first grid needs, so a model that cannot draw fails there.

import { Tensor, createSession } from './engine.js';
import { checkGraph } from './onnxfile.js';
import {
  DECODER_FILE,
  DECODER_IMAGE,
  DECODER_INPUT,
  DECODER_NOISE_OUTPUTS,
  ENCODER_FILE,
  ENCODER_INPUT,
  ENCODER_OUTPUTS,
  MANIFEST_FILE,
  MAX_MANIFEST_BYTES,
  ModelError,
  PRIOR_NAMES,
  SAMPLER_FILE,
  SAMPLER_INPUT,
  SAMPLER_OUTPUT,
  defaultTemperature,
  parseManifest,
  priorNames,
} from './manifest.js';
import { checkNoise, drawPixels } from './pixels.js';
import { GaussianMixture, LearnedPrior, StandardNormal, checkTemperature } from './priors.js';
import { draws } from './random.js';
import * as selection from './selection.js';

const BATCH = 64; // rows per graph run, as bird-gen's default batch: bounds the page's memory
const MAX_BATCH_VALUES = 1 << 24; // numbers in one array of a batch (runtime/model.py's)

// A file's bytes, refused past `limit` whether or not the server sends a Content-Length.
async function fetchBytes(url, limit, what) {
  let response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new ModelError(`cannot fetch ${what} (${error.message})`);
  }
  if (!response.ok)
    throw new ModelError(
      `cannot fetch ${what}: the server answered ${response.status} ${response.statusText}`,
    );
  const tooBig = () => new ModelError(`${what} is larger than the ${limit} bytes expected`);
  if (Number(response.headers.get('Content-Length') ?? 0) > limit) throw tooBig();
  const bytes = new Uint8Array(limit);
  let filled = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (filled + value.length > limit) {
      await reader.cancel();
      throw tooBig();
    }
    bytes.set(value, filled);
    filled += value.length;
  }
  return bytes.subarray(0, filled);
}

async function sha256(bytes) {
  if (!globalThis.crypto?.subtle) {
    throw new ModelError(
      "the page checks model files with the browser's SubtleCrypto, which browsers give only to " +
        'pages served over https or from localhost',
    );
  }
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

const firstLine = (error) =>
  String(error?.message ?? error)
    .trim()
    .split('\n')[0];

// One graph of the model, opened only if its signature is the format's (runtime/graphs.py's
// check_signature): input `input` float32 [N, ...inRow] with a dynamic N, outputs that begin with
// `outputs`, each float32 [N, ...outRow] when run.
class Graph {
  static async open(bytes, file, input, inRow, outRow, outputs) {
    checkGraph(bytes, file); // a loop without end would hold onnxruntime's worker for good
    let session;
    try {
      session = await createSession(bytes);
    } catch (error) {
      throw new ModelError(`${file} cannot be loaded by onnxruntime-web: ${firstLine(error)}`);
    }
    try {
      Graph.checkSignature(session, file, input, inRow, outputs);
    } catch (error) {
      await session.release(); // onnxruntime-web frees a session's WASM memory only on release
      throw error;
    }
    return new Graph(session, file, input, inRow, outRow);
  }

  static checkSignature(session, file, input, inRow, outputs) {
    if (session.inputNames.join() !== input) {
      throw new ModelError(`${file} takes inputs [${session.inputNames}], the format needs [${input}]`);
    }
    const [{ type, shape }] = session.inputMetadata;
    if (type !== 'float32') throw new ModelError(`${file} input ${input} is ${type}, not float32`);
    const fixed = (dim) => typeof dim === 'number' && dim >= 0;
    const rowDiffers = shape.slice(1).some((dim, i) => fixed(dim) && dim !== inRow[i]);
    if (shape.length !== inRow.length + 1 || fixed(shape[0]) || rowDiffers) {
      throw new ModelError(
        `${file} input ${input} has shape [${shape}], the format needs [N,${inRow}] with a dynamic N`,
      );
    }
    if (session.outputNames.slice(0, outputs.length).join() !== outputs.join()) {
      throw new ModelError(
        `${file} has outputs [${session.outputNames}], the format needs [${outputs}] first`,
      );
    }
  }

  constructor(session, file, input, inRow, outRow) {
    Object.assign(this, { session, file, input, inRow, outRow });
    this.inLength = this.inRow.reduce((a, b) => a * b, 1);
  }

  get outputNames() {
    return this.session.outputNames;
  }

  // The named outputs for all rows of `data`, BATCH rows a run, joined output by output.
  async run(data, outputs) {
    const n = data.length / this.inLength;
    const batches = [];
    for (let start = 0; start < n; start += BATCH) {
      // A copy of the rows: onnxruntime's worker (engine.js) takes the buffer it is given, which
      // would detach the rest of `data` with it.
      const rows = data.slice(start * this.inLength, Math.min(n, start + BATCH) * this.inLength);
      batches.push(await this.runBatch(rows, outputs));
    }
    return outputs.map((_, i) => {
      const whole = new Float32Array(batches.reduce((sum, batch) => sum + batch[i].length, 0));
      let at = 0;
      for (const batch of batches) {
        whole.set(batch[i], at);
        at += batch[i].length;
      }
      return whole;
    });
  }

  async runBatch(rows, outputs) {
    const n = rows.length / this.inLength;
    let results;
    try {
      results = await this.session.run(
        { [this.input]: new Tensor('float32', rows, [n, ...this.inRow]) },
        outputs,
      );
    } catch (error) {
      throw new ModelError(`${this.file} failed on a batch of ${n}: ${firstLine(error)}`);
    }
    const want = [n, ...this.outRow];
    return outputs.map((name) => {
      const { type, dims, data } = results[name];
      if (type !== 'float32' || dims.join() !== want.join()) {
        throw new ModelError(`${this.file} ${name} is ${type} [${dims}], expected float32 [${want}]`);
      }
      // as runtime/graphs.py's run_graph: a NaN would be drawn black, or rank no bird
      if (!data.every(Number.isFinite)) {
        throw new ModelError(`${this.file} output '${name}' holds NaN or infinity for a batch of ${n}`);
      }
      return data;
    });
  }
}

export class Model {
  // The model folder at `url` (ending in /), able to draw its first grid; ModelError if not.
  static async load(url, name) {
    const text = new TextDecoder().decode(
      await fetchBytes(new URL(MANIFEST_FILE, url), MAX_MANIFEST_BYTES, `${name}/${MANIFEST_FILE}`),
    );
    let manifest;
    try {
      manifest = parseManifest(text);
    } catch (error) {
      if (error instanceof ModelError) error.message = `${name}/${MANIFEST_FILE}: ${error.message}`;
      throw error;
    }
    const model = new Model(url, name, manifest);
    try {
      // Both at once: the decoder's session starts onnxruntime's WASM while the prior downloads.
      const [decoder] = await Promise.all([model.decoder(), model.prior(manifest.defaultPrior)]);
      model.hasPixelNoise = decoder.hasPixelNoise;
      if (manifest.defaultNoise > 0 && !model.hasPixelNoise) {
        throw new ModelError(
          `${name}/${MANIFEST_FILE} defaults to pixel noise, but ${DECODER_FILE} does not output ${DECODER_NOISE_OUTPUTS.join(', ')}`,
        );
      }
    } catch (error) {
      await model.release();
      throw error;
    }
    return model;
  }

  constructor(url, name, manifest) {
    this.url = url;
    this.name = name;
    this.manifest = manifest;
    this.size = manifest.imageSize;
    this.latentDim = manifest.latentDim;
    this.imageShape = [3, this.size, this.size];
    this.hasPixelNoise = false; // known once the decoder is loaded, in Model.load
    this.loads = new Map(); // what -> promise, so two requests share one fetch
    this.graphs = []; // every session opened, released together when the page is done with it
  }

  async openGraph(...args) {
    const graph = await Graph.open(...args);
    this.graphs.push(graph);
    return graph;
  }

  // Frees every onnxruntime session this model opened: WebAssembly memory never shrinks, and
  // without this each model switch kept its sessions (about 7 MB a model) for good.
  async release() {
    await Promise.allSettled(this.loads.values()); // a load still opening would add its session
    const graphs = this.graphs.splice(0);
    await Promise.allSettled(graphs.map((graph) => graph.session.release()));
  }

  get priorNames() {
    return priorNames(this.manifest);
  }

  defaultTemperature(prior) {
    return defaultTemperature(this.manifest, this.checkPrior(prior));
  }

  get defaultNoise() {
    return this.manifest.defaultNoise;
  }

  checkPrior(name) {
    if (!PRIOR_NAMES.includes(name))
      throw new RangeError(`unknown prior ${name} (choose ${PRIOR_NAMES.join(', ')})`);
    if (!this.priorNames.includes(name))
      throw new RangeError(
        `the model ${this.name} has no ${name} prior (it has: ${this.priorNames.join(', ')})`,
      );
    return name;
  }

  // Loaded once; a failed load is forgotten, so the next request tries again.
  once(what, load) {
    if (!this.loads.has(what)) {
      const promise = load();
      this.loads.set(what, promise);
      promise.catch(() => this.loads.delete(what));
    }
    return this.loads.get(what);
  }

  async file(name) {
    const entry = this.manifest.files[name];
    const bytes = await fetchBytes(new URL(name, this.url), entry.bytes, `${this.name}/${name}`);
    if (bytes.length !== entry.bytes)
      throw new ModelError(
        `${this.name}/${name} has ${bytes.length} bytes, the manifest says ${entry.bytes}`,
      );
    if ((await sha256(bytes)) !== entry.sha256)
      throw new ModelError(`${this.name}/${name} does not match its sha256 in the manifest`);
    return bytes;
  }

  decoder() {
    return this.once(DECODER_FILE, async () => {
      const bytes = await this.file(DECODER_FILE);
      const graph = await this.openGraph(
        bytes,
        DECODER_FILE,
        DECODER_INPUT,
        [this.latentDim],
        this.imageShape,
        [DECODER_IMAGE],
      );
      const noise = graph.outputNames.slice(1, 1 + DECODER_NOISE_OUTPUTS.length);
      return { graph, hasPixelNoise: noise.join() === DECODER_NOISE_OUTPUTS.join() };
    });
  }

  encoder() {
    return this.once(ENCODER_FILE, async () => {
      const bytes = await this.file(ENCODER_FILE);
      return this.openGraph(
        bytes,
        ENCODER_FILE,
        ENCODER_INPUT,
        this.imageShape,
        [this.latentDim],
        ENCODER_OUTPUTS,
      );
    });
  }

  prior(name) {
    return this.once(`prior:${this.checkPrior(name)}`, async () => {
      if (name === 'standard') return new StandardNormal(this.latentDim);
      const info = this.manifest.priors[name];
      const bytes = await this.file(info.file);
      if (name === 'fitted') return GaussianMixture.fromNpz(bytes, info.components, this.latentDim);
      const graph = await this.openGraph(
        bytes,
        SAMPLER_FILE,
        SAMPLER_INPUT,
        [info.noiseDim],
        [this.latentDim],
        [SAMPLER_OUTPUT],
      );
      return new LearnedPrior(async (noise) => (await graph.run(noise, [SAMPLER_OUTPUT]))[0], info.noiseDim);
    });
  }

  // Codes float32 [n * D] to mean images float32 [n * 3 * S * S].
  async decode(z) {
    const { graph } = await this.decoder();
    return (await graph.run(z, [DECODER_IMAGE]))[0];
  }

  // Codes to images whose every pixel is drawn at temperature `noise` from `rng`.
  async decodeDrawn(z, noise, rng) {
    const { graph } = await this.decoder();
    if (!this.hasPixelNoise) {
      throw new RangeError(
        `the decoder of ${this.name} has no pixel scales, so it can only show the mean: use pixel noise 0`,
      );
    }
    const [location, scale, coupling] = await graph.run(z, DECODER_NOISE_OUTPUTS);
    return drawPixels(location, scale, coupling, noise, rng, z.length / this.latentDim, this.size);
  }

  // Images float32 [n * 3 * S * S] in [0, 1] to their posterior means [n * D].
  async encode(images) {
    const graph = await this.encoder();
    return (await graph.run(images, ENCODER_OUTPUTS.slice(0, 1)))[0];
  }

  // The rater, shipped beside the model folders (selection.js), opened on first use.
  rater() {
    return this.once('rater', async () => {
      const { RATER_FOLDER, RATER_FILE, RATER_INPUT, RATER_OUTPUT, RATER_SIZE } = selection;
      const url = new URL(`../${RATER_FOLDER}/${RATER_FILE}`, this.url);
      const bytes = await fetchBytes(url, selection.MAX_RATER_BYTES, RATER_FILE);
      if ((await sha256(bytes)) !== selection.RATER_SHA256)
        throw new ModelError(`${RATER_FILE} is damaged: its sha256 is not the shipped rater's`);
      const row = [3, RATER_SIZE, RATER_SIZE];
      return this.openGraph(bytes, RATER_FILE, RATER_INPUT, row, [], [RATER_OUTPUT]);
    });
  }

  // The rater's score of each of n images [n * 3 * S * S].
  async rate(images, n) {
    const graph = await this.rater();
    const [ratings] = await graph.run(selection.toRaterSize(images, n, this.size), [selection.RATER_OUTPUT]);
    return ratings;
  }

  // n new birds as BirdVAE.sample draws them: codes from the prior at `temperature`, then the
  // decoder's mean (noise 0) or its pixels drawn at `noise`; with `bestOf` k, k birds for each
  // one returned, the one the rater rates highest kept (selection.js). `drawn(done)` is told
  // after each batch, for a progress line. `signal` aborting stops the draw at the next step
  // (a run of the prior, the decoder or the rater is not cut short), with its AbortError.
  async sample({ n, seed, prior, temperature, noise, bestOf = 1 }, drawn = () => {}, signal = null) {
    checkTemperature(temperature);
    checkNoise(noise);
    if (!Number.isInteger(bestOf) || bestOf < 1 || bestOf > selection.MAX_BEST_OF) {
      throw new RangeError(
        `best of must be a whole number from 1 to ${selection.MAX_BEST_OF}, got ${bestOf}`,
      );
    }
    // BATCH birds' candidates at a time, as BirdVAE.draw: memory stays that of BATCH x bestOf
    // birds, and the streams are read in the same order as in one go. As BirdVAE's
    // _check_batch, no array of a batch may hold more than MAX_BATCH_VALUES numbers.
    const perBird = BATCH * Math.max(3 * this.size * this.size, this.latentDim);
    if (perBird * bestOf > MAX_BATCH_VALUES) {
      throw new RangeError(
        `best of ${bestOf} decodes ${BATCH * bestOf} birds at once, too many for this model's ${this.size}x${this.size} images: choose at most ${Math.max(1, Math.floor(MAX_BATCH_VALUES / perBird))}`,
      );
    }
    const streams = draws(seed);
    const source = await this.prior(prior);
    const length = 3 * this.size * this.size;
    const out = new Float32Array(n * length);
    const step = async (work) => {
      signal?.throwIfAborted();
      return work();
    };
    for (let start = 0; start < n; start += BATCH) {
      const count = Math.min(BATCH, n - start);
      const z = await step(() => source.sample(count * bestOf, streams, temperature));
      const images = await step(() =>
        noise === 0 ? this.decode(z) : this.decodeDrawn(z, noise, streams.pixels),
      );
      const scores = bestOf > 1 ? await step(() => this.rate(images, count * bestOf)) : null;
      signal?.throwIfAborted();
      out.set(selection.chooseBest(images, scores, bestOf, this.size), start * length);
      drawn(start + count);
    }
    return out;
  }
}
