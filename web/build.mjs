// npm run build [-- --out DIR] [-- --model NAME=FOLDER ...]: the static site in one folder.
//
// DIR (default web/dist) gets the page (src/), onnxruntime-web's WASM build (ort/) and each model
// folder (models/NAME/, the shipped birds32 and birds64 unless --model names others), with
// models/index.json listing them, and the rater the page's "best of" uses (models/rater32/);
// nothing in it is fetched from anywhere else, so it can be put on any static host as it is.
// Each model is checked as the page checks it (manifest, sizes, sha256) and only the files its
// manifest lists are copied. The site is assembled beside DIR and renamed into place, so DIR is
// never half-built.

import { createHash } from 'node:crypto';
import {
  cpSync,
  lstatSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { MANIFEST_FILE, ModelError, parseManifest } from './src/manifest.js';
import { MAX_RATER_BYTES, RATER_FILE, RATER_FOLDER, RATER_SHA256 } from './src/selection.js';

const WEB = dirname(fileURLToPath(import.meta.url));
const ORT = join(WEB, 'node_modules', 'onnxruntime-web', 'dist');
// The WASM-only ES module build and what it loads at run time: its Emscripten glue and binary.
const ORT_FILES = ['ort.wasm.min.mjs', 'ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm'];
const SHIPPED = ['birds32', 'birds64'].map((name) => `${name}=${join(WEB, '..', 'models', name)}`);
// The rater the page's "best of" chooses with (src/selection.js), published beside the models.
const RATER = join(WEB, '..', 'models', RATER_FOLDER, RATER_FILE);
const MARKER = '.bird-vae-web'; // marks a folder this script built, which it may replace
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/; // as the page accepts them

function fail(message) {
  console.error(`build: ${message}`);
  process.exit(1);
}

// A model's file as bytes; as bird-gen does, a model's files must be its own, not links.
function plainFile(path) {
  if (!lstatSync(path).isFile()) fail(`${path} is a link or not a plain file; copy the file itself there`);
  return readFileSync(path);
}

function checkedModel(spec) {
  const [name, folder] = spec.split(/=(.*)/s);
  if (!MODEL_NAME.test(name ?? '') || !folder)
    fail(`--model takes NAME=FOLDER with a NAME of letters, digits, - and _, got ${spec}`);
  const where = resolve(folder);
  const manifestPath = join(where, MANIFEST_FILE);
  if (!existsSync(manifestPath)) fail(`${where} is not a model folder: it has no ${MANIFEST_FILE}`);
  // The bytes checked here are the bytes published, whatever happens to the folder meanwhile.
  const contents = new Map([[MANIFEST_FILE, plainFile(manifestPath)]]);
  let manifest;
  try {
    manifest = parseManifest(contents.get(MANIFEST_FILE).toString('utf8'));
  } catch (error) {
    if (error instanceof ModelError) fail(`${where}: ${error.message}`);
    throw error;
  }
  for (const [file, entry] of Object.entries(manifest.files)) {
    const path = join(where, file);
    if (!existsSync(path)) fail(`${path} is missing`);
    const bytes = plainFile(path);
    if (bytes.length !== entry.bytes)
      fail(`${path} has ${bytes.length} bytes, the manifest says ${entry.bytes}`);
    if (createHash('sha256').update(bytes).digest('hex') !== entry.sha256)
      fail(`${path} does not match its sha256 in the manifest`);
    contents.set(file, bytes);
  }
  return { name, contents };
}

function replaceable(folder) {
  if (!existsSync(folder)) return true;
  if (!statSync(folder).isDirectory()) return false;
  return existsSync(join(folder, MARKER)) || readdirSync(folder).length === 0;
}

const OPTIONS = {
  out: { type: 'string', default: join(WEB, 'dist') },
  model: { type: 'string', multiple: true },
};
let values;
try {
  ({ values } = parseArgs({ options: OPTIONS }));
} catch (error) {
  // node's own words up to their first full stop: "Unknown option '--modle'", not a stack.
  console.error(`build: ${error.message.split('. ')[0]} (options: --out DIR, --model NAME=FOLDER)`);
  process.exit(2);
}
const out = resolve(values.out);
if (!replaceable(out))
  fail(`${out} exists and was not built by this script; remove it or give another --out`);
for (const file of ORT_FILES) {
  if (!existsSync(join(ORT, file))) fail(`${join(ORT, file)} is missing: run npm ci in ${WEB} first`);
}
const models = (values.model ?? SHIPPED).map(checkedModel);
const names = models.map((model) => model.name);
if (new Set(names).size !== names.length) fail(`two models are called the same: ${names.join(', ')}`);
if (names.includes(RATER_FOLDER)) fail(`${RATER_FOLDER} is the rater's folder; call the model otherwise`);
if (!existsSync(RATER) || statSync(RATER).size > MAX_RATER_BYTES) fail(`${RATER} is missing or too large`);
const rater = plainFile(RATER);
if (createHash('sha256').update(rater).digest('hex') !== RATER_SHA256)
  fail(`${RATER} is not the rater src/selection.js names (RATER_SHA256)`);

const staging = join(dirname(out), `.${basename(out)}.building`);
rmSync(staging, { recursive: true, force: true });
cpSync(join(WEB, 'src'), staging, { recursive: true });
mkdirSync(join(staging, 'ort'));
for (const file of ORT_FILES) cpSync(join(ORT, file), join(staging, 'ort', file));
for (const { name, contents } of models) {
  mkdirSync(join(staging, 'models', name), { recursive: true });
  // The bytes that were checked are the bytes published, whatever happens to the folder meanwhile.
  for (const [file, bytes] of contents) writeFileSync(join(staging, 'models', name, file), bytes);
}
mkdirSync(join(staging, 'models', RATER_FOLDER));
writeFileSync(join(staging, 'models', RATER_FOLDER, RATER_FILE), rater);
writeFileSync(join(staging, 'models', 'index.json'), `${JSON.stringify({ models: names }, null, 2)}\n`);
writeFileSync(join(staging, MARKER), 'built by web/build.mjs; npm run build replaces this folder\n');
rmSync(out, { recursive: true, force: true });
renameSync(staging, out);

const megabytes = (path) => (statSync(path).size / 1e6).toFixed(1);
const wasm = join(out, 'ort', 'ort-wasm-simd-threaded.wasm');
console.log(
  `built ${out}: the page, onnxruntime-web (${megabytes(wasm)} MB of WASM), models ${names.join(', ')}`,
);
