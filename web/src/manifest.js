// A model folder's manifest.json, read and checked by the rules of runtime/format.py.
//
// The page treats a model folder as hostile: everything it fetches is listed here with its size
// and sha256, and only the format's file names are ever fetched, so a manifest cannot point the
// page anywhere else. Sizes are bounded as well, so a model cannot make the page allocate
// without limit. Pure functions: the build script checks models with the same code.

export const MANIFEST_FILE = 'manifest.json';
export const ENCODER_FILE = 'encoder.onnx';
export const DECODER_FILE = 'decoder.onnx';
export const MIXTURE_FILE = 'prior.npz';
export const SAMPLER_FILE = 'prior.onnx';
export const MODEL_FILES = [ENCODER_FILE, DECODER_FILE, SAMPLER_FILE, MIXTURE_FILE];

// Graph signatures (runtime/format.py).
export const ENCODER_INPUT = 'image';
export const ENCODER_OUTPUTS = ['mean', 'logvar'];
export const DECODER_INPUT = 'z';
export const DECODER_IMAGE = 'image';
export const DECODER_NOISE_OUTPUTS = ['location', 'scale', 'coupling'];
export const SAMPLER_INPUT = 'noise';
export const SAMPLER_OUTPUT = 'z';

export const PRIOR_KINDS = { learned: ['sampler', SAMPLER_FILE], fitted: ['gaussian-mixture', MIXTURE_FILE] };
export const PRIOR_NAMES = [...Object.keys(PRIOR_KINDS), 'standard']; // runtime/format.py's order
export const READABLE_VERSIONS = [1, 2];

// Bounds for the browser, far above the shipped models (8 MB in all, 64x64, 256 numbers a code).
export const MAX_MANIFEST_BYTES = 1 << 20;
const MAX_FILE_BYTES = 64 << 20;
export const MAX_IMAGE_SIZE = 256;
export const MAX_JSON_DEPTH = 32; // runtime/format.py's
const MAX_LATENT_DIM = 4096;
const MAX_COMPONENTS = 1024;
// components x latent_dim x latent_dim of a mixture's factors (runtime/format.py's
// MAX_PRIOR_VALUES): the arrays prior.npz may then hold are bounded before one is inflated.
export const MAX_PRIOR_VALUES = 1 << 24;

// A prior's temperature and the pixel noise, at most (runtime/format.py's MAX_TEMPERATURE and
// MAX_NOISE): at 10 a draw sits ten standard deviations out, and more overflows float32.
export const MAX_TEMPERATURE = 10;
export const MAX_NOISE = 10;
const PRIOR_KEYS = ['kind', 'file', 'default_temperature', 'components', 'noise_dim', 'source'];

export class ModelError extends Error {
  name = 'ModelError';
}

const isObject = (value) => typeof value === 'object' && value !== null && !Array.isArray(value);

function positiveInteger(value, what, max) {
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new ModelError(
      `manifest ${what} must be a whole number from 1 to ${max}, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

function temperature(value, what, max = MAX_TEMPERATURE) {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > max) {
    throw new ModelError(`manifest ${what} must be a number from 0 to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

// Version 1 carried at most one prior, the mixture, as `prior` (format.upgrade).
function upgrade(data) {
  const version = data.format_version;
  if (!READABLE_VERSIONS.includes(version)) {
    throw new ModelError(
      `manifest format_version ${JSON.stringify(version)} is not supported (this page reads ` +
        `versions ${READABLE_VERSIONS.join(', ')})`,
    );
  }
  if (version === 2) return data;
  const { prior, ...rest } = data;
  return { ...rest, priors: prior ? { fitted: { kind: 'gaussian-mixture', ...prior } } : {} };
}

function parseFiles(files) {
  if (!isObject(files)) throw new ModelError('manifest files must be an object');
  const parsed = {};
  for (const [name, entry] of Object.entries(files)) {
    if (!MODEL_FILES.includes(name)) {
      throw new ModelError(
        `manifest lists a file ${JSON.stringify(name)}; a model folder holds only ${MODEL_FILES.join(', ')}`,
      );
    }
    if (!isObject(entry) || typeof entry.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(entry.sha256)) {
      throw new ModelError(`manifest entry for ${name} needs a sha256 of 64 hex digits`);
    }
    if (!Number.isInteger(entry.bytes) || entry.bytes < 0 || entry.bytes > MAX_FILE_BYTES) {
      throw new ModelError(
        `manifest says ${name} has ${JSON.stringify(entry.bytes)} bytes; this page reads files of up to ${MAX_FILE_BYTES >> 20} MB`,
      );
    }
    parsed[name] = { sha256: entry.sha256, bytes: entry.bytes };
  }
  return parsed;
}

function parsePriors(priors) {
  if (!isObject(priors)) throw new ModelError('manifest priors must be an object');
  const parsed = {};
  for (const [name, info] of Object.entries(priors)) {
    if (!Object.hasOwn(PRIOR_KINDS, name)) {
      throw new ModelError(
        `manifest has an unknown prior ${JSON.stringify(name)} (known: ${Object.keys(PRIOR_KINDS).join(', ')})`,
      );
    }
    const [kind, file] = PRIOR_KINDS[name];
    const unknown = isObject(info) ? Object.keys(info).filter((key) => !PRIOR_KEYS.includes(key)) : [];
    if (unknown.length) {
      throw new ModelError(`manifest prior ${JSON.stringify(name)} has unknown keys ${unknown.join(', ')}`);
    }
    if (!isObject(info) || info.kind !== kind || info.file !== file) {
      throw new ModelError(
        `manifest prior ${JSON.stringify(name)} must be kind ${JSON.stringify(kind)} in ${JSON.stringify(file)}`,
      );
    }
    const prior = {
      file,
      defaultTemperature: temperature(info.default_temperature ?? 1.0, `${name} prior default_temperature`),
    };
    if (name === 'fitted')
      prior.components = positiveInteger(info.components, `${name} prior components`, MAX_COMPONENTS);
    else prior.noiseDim = positiveInteger(info.noise_dim, `${name} prior noise_dim`, MAX_LATENT_DIM);
    parsed[name] = prior;
  }
  return parsed;
}

// The first key that an object of `text` (valid JSON) names twice, or null. JSON.parse keeps
// the last, so a reader who took the first would be shown another manifest than the page runs;
// the runtime refuses such a manifest too (format.py's _object_of_unique_keys).
function duplicateKey(text) {
  const objects = []; // per open object or array: its keys so far (null for an array)
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      const keys = objects.at(-1);
      if (expectKey && keys) {
        const key = JSON.parse(text.slice(i, end + 1));
        if (keys.has(key)) return key;
        keys.add(key);
      }
      expectKey = false;
      i = end;
    } else if (c === '{' || c === '[') {
      objects.push(c === '{' ? new Set() : null);
      expectKey = c === '{';
    } else if (c === '}' || c === ']') {
      objects.pop();
    } else if (c === ',') {
      expectKey = objects.at(-1) !== null;
    }
  }
  return null;
}

// How deep objects and arrays nest in parsed JSON (an object of plain values: 1), as
// runtime/format.py's nesting: the runtime refuses a manifest past MAX_JSON_DEPTH, so the page does.
function nesting(data) {
  let deepest = 0;
  const stack = [[data, 1]];
  while (stack.length > 0) {
    const [value, depth] = stack.pop();
    if (value !== null && typeof value === 'object') {
      deepest = Math.max(deepest, depth);
      for (const child of Object.values(value)) stack.push([child, depth + 1]);
    }
  }
  return deepest;
}

// The manifest's JSON text as { imageSize, latentDim, files, priors, defaultPrior,
// defaultTemperature, defaultNoise }: what the page uses; ModelError says what is wrong.
export function parseManifest(text) {
  let data;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new ModelError(`manifest.json is not valid JSON (${error.message})`);
  }
  if (!isObject(data)) throw new ModelError('manifest.json does not hold a JSON object');
  const twice = duplicateKey(text);
  if (twice !== null) {
    const shown = twice.length <= 40 ? twice : `${twice.slice(0, 40)}...`;
    throw new ModelError(`manifest.json gives ${JSON.stringify(shown)} twice in one object`);
  }
  if (nesting(data) > MAX_JSON_DEPTH) {
    throw new ModelError(`manifest.json nests its JSON more than ${MAX_JSON_DEPTH} levels deep`);
  }
  data = upgrade(data);
  if (typeof data.likelihood !== 'string') throw new ModelError('manifest lacks its likelihood');
  const manifest = {
    imageSize: positiveInteger(data.image_size, 'image_size', MAX_IMAGE_SIZE),
    latentDim: positiveInteger(data.latent_dim, 'latent_dim', MAX_LATENT_DIM),
    files: parseFiles(data.files),
    priors: parsePriors(data.priors ?? {}),
    defaultPrior: data.default_prior ?? 'standard',
    defaultTemperature: temperature(data.default_temperature ?? 1.0, 'default_temperature'),
    defaultNoise: temperature(data.default_noise ?? 0.0, 'default_noise', MAX_NOISE),
  };
  const fitted = manifest.priors.fitted;
  if (fitted && fitted.components * manifest.latentDim * manifest.latentDim > MAX_PRIOR_VALUES) {
    throw new ModelError(
      `manifest prior 'fitted' has ${fitted.components} components of ${manifest.latentDim}x${manifest.latentDim} factors, more than the ${MAX_PRIOR_VALUES} values a mixture may have`,
    );
  }
  if (manifest.defaultPrior !== 'standard' && !Object.hasOwn(manifest.priors, manifest.defaultPrior)) {
    throw new ModelError(
      `manifest defaults to the ${JSON.stringify(manifest.defaultPrior)} prior, which it does not have`,
    );
  }
  const needed = [ENCODER_FILE, DECODER_FILE, ...Object.values(manifest.priors).map((p) => p.file)];
  for (const name of needed) {
    if (!Object.hasOwn(manifest.files, name)) throw new ModelError(`manifest does not list ${name}`);
  }
  return manifest;
}

// The priors a model can sample from, its default first (BirdVAE.prior_names).
export function priorNames(manifest) {
  const names = PRIOR_NAMES.filter((name) => name === 'standard' || Object.hasOwn(manifest.priors, name));
  return [manifest.defaultPrior, ...names.filter((name) => name !== manifest.defaultPrior)];
}

// Each prior's own default temperature (BirdVAE.default_temperature).
export function defaultTemperature(manifest, prior) {
  return prior === 'standard' ? manifest.defaultTemperature : manifest.priors[prior].defaultTemperature;
}
