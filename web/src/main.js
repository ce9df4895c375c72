// The page: the form, the bird grid and the photo, wired to a Model.
//
// One action runs at a time and the form is disabled while it does. An action computes
// everything first and only then changes the page, so a failure leaves the previous grid and
// settings in place and says why in the error line: there is no half-switched model and no
// half-drawn grid. `window.birdvae` is the page's scripting interface, which the browser
// tests drive (docs/WEB.md).

import { defaultScale, grid, psnr, row, show } from './figure.js';
import { MAX_NOISE, MAX_TEMPERATURE, ModelError } from './manifest.js';
import { Model } from './model.js';
import { MAX_PHOTO_BYTES, PhotoError, loadPhoto, readBytes, toModelInput } from './photo.js';
import { toTiles } from './pixels.js';
import { MAX_SEED } from './random.js';
import { MAX_BEST_OF } from './selection.js';

const MAX_BIRDS = 256; // a grid of 16 x 16; bird-gen writes larger ones
const MODELS_INDEX = 'models/index.json'; // written by build.mjs: the model folders beside it
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('controls'),
  settings: $('settings'),
  model: $('model'),
  prior: $('prior'),
  count: $('count'),
  seed: $('seed'),
  temperature: $('temperature'),
  noise: $('noise'),
  bestOf: $('best-of'),
  draw: $('draw'),
  newBirds: $('new-birds'),
  stop: $('stop'),
  status: $('status'),
  error: $('error'),
  birds: $('birds'),
  photoFile: $('photo-file'),
  drop: $('drop'),
  recon: $('recon'),
  caption: $('photo-caption'),
  photoStatus: $('photo-status'),
};

let current = null; // the model whose birds the canvas shows
let shown = null; // the settings the canvas shows, or showed before given codes were decoded
let decoded = false; // the canvas shows given codes decoded, not `shown`'s birds
let described = ''; // the status line's words for what the canvas shows
let photo = null; // the last photo reconstructed, redone when the model changes
const timings = {};

// Actions, one at a time -------------------------------------------------------------------

let queue = Promise.resolve();
let busyUntil = 0; // when the last action ended, on the clock of events' timeStamp

function serial(task) {
  const result = queue.then(async () => {
    const focused = document.activeElement; // disabling the form drops the keyboard's focus
    ui.settings.disabled = true;
    try {
      return await task();
    } finally {
      ui.settings.disabled = false;
      busyUntil = performance.now();
      if (focused instanceof HTMLElement && document.activeElement === document.body) focused.focus();
    }
  });
  queue = result.catch(() => {});
  return result;
}

// An input event made while an action ran (a click the busy page could not answer yet, handed
// over once it could): the user clicked at a page that was not ready, so it starts nothing.
function stale(event) {
  return event.timeStamp < busyUntil;
}

// A user's action: its failure is shown, and the selects go back to what the canvas shows.
// A draw the user stopped is no failure: the status line says so and the page is as it was.
function act(task) {
  return serial(task).then(
    () => showError(null),
    (error) => {
      if (current) {
        ui.model.value = current.name;
        ui.prior.value = shown.prior;
      } else {
        ui.model.selectedIndex = -1; // no model loaded: choosing any, the same one too, retries
      }
      showFailure(error);
    },
  );
}

// A failed action's error, or a stopped draw's word that it stopped.
function showFailure(error) {
  if (error instanceof DOMException && error.name === 'AbortError') sayStopped();
  else showError(error);
}

// A stopped draw: the form shows the settings of the grid again (the stopped draw's count and
// best of would only start it once more) and the status line says what happened.
function sayStopped() {
  showError(null);
  if (current) fillForm(current, shown);
  ui.status.textContent = described
    ? `Stopped; the grid is as it was: ${described}`
    : 'Stopped before any birds were drawn: choose a model to draw them';
}

function showError(error) {
  ui.error.hidden = error === null;
  if (error === null) return;
  if (error instanceof ModelError) ui.error.textContent = `This model cannot be used: ${error.message}`;
  else if (error instanceof PhotoError || error instanceof RangeError || error instanceof PageError)
    ui.error.textContent = error.message;
  else {
    // Not a user's mistake, nor a model's or a photo's the page names: a bug, worth its stack.
    ui.error.textContent = `Something went wrong: ${error.message ?? error}`;
    console.error(error);
  }
}

// `message` in the status line while `task` runs; then the line describes the canvas again.
// The page gets a frame to show the message first (preparing a photo and the tiles runs on
// its thread; the models run in onnxruntime's worker), or a tenth of a second where no frames
// come (a hidden tab).
async function inProgress(message, task) {
  ui.status.textContent = message;
  await Promise.race([
    new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0))),
    new Promise((resolve) => setTimeout(resolve, 100)),
  ]);
  try {
    return await task();
  } finally {
    ui.status.textContent = described;
  }
}

// The form ------------------------------------------------------------------------------------

// The input's value, a number >= min (a whole one if `whole`) and <= max; RangeError if not.
function number(input, what, { whole = false, min = 0, max = Infinity } = {}) {
  const value = input.value.trim() === '' ? NaN : Number(input.value);
  const valid = whole ? Number.isSafeInteger(value) : Number.isFinite(value);
  // The field is marked invalid until a value is read from it again.
  if (valid && value >= min && value <= max) input.removeAttribute('aria-invalid');
  else {
    input.setAttribute('aria-invalid', 'true');
    const range = `${whole ? 'a whole number' : 'a number'} from ${min} to ${max}`;
    // A number field hands over "" for what is no number ("12a"): say that, not `got ""`.
    const got = input.validity?.badInput
      ? 'what was typed is not a number'
      : input.value.trim() === ''
        ? 'the field is empty'
        : `got "${input.value}"`;
    throw new RangeError(`${what} must be ${range}: ${got}`);
  }
  return value;
}

function readSettings() {
  return {
    n: number(ui.count, 'the number of birds', { whole: true, min: 1, max: MAX_BIRDS }),
    seed: number(ui.seed, 'the seed', { whole: true, max: MAX_SEED }),
    prior: ui.prior.value,
    temperature: number(ui.temperature, 'the temperature', { max: MAX_TEMPERATURE }),
    noise: number(ui.noise, 'the pixel noise', { max: MAX_NOISE }),
    bestOf: number(ui.bestOf, 'best of', { whole: true, min: 1, max: MAX_BEST_OF }),
  };
}

function fillForm(model, settings) {
  ui.model.value = model.name;
  ui.prior.replaceChildren(...model.priorNames.map((name) => new Option(name, name)));
  ui.prior.value = settings.prior;
  ui.temperature.value = settings.temperature;
  ui.noise.value = settings.noise;
  ui.noise.disabled = !model.hasPixelNoise;
  ui.noise.title = model.hasPixelNoise ? '' : 'This decoder gives only its mean image';
  ui.count.value = settings.n;
  ui.seed.value = settings.seed;
  ui.bestOf.value = settings.bestOf;
}

// The canvases --------------------------------------------------------------------------------

// A canvas shown narrower than it is drawn (a grid of 256, a phone) is shrunk smoothly: a
// nearest-neighbour shrink drops whole rows and columns of pixels, gutters among them.
const shrinkWatch = new ResizeObserver((entries) => {
  for (const { target } of entries) target.classList.toggle('shrunk', target.clientWidth < target.width);
});
shrinkWatch.observe(ui.birds);
shrinkWatch.observe(ui.recon);

function showBirds(model, images, n) {
  show(ui.birds, grid(toTiles(images, n, model.size), model.size, defaultScale(model.size)));
  timings.firstGrid ??= performance.now();
}

// `before` runs after the birds are drawn and before the page changes: what else the action
// computes (a photo's reconstruction by a new model), so its failure changes nothing either.
async function drawBirds(model, settings, before = async () => {}) {
  const start = performance.now();
  const best = settings.bestOf > 1 ? `, best of ${settings.bestOf}` : '';
  const drawing = `Drawing ${settings.n} birds${best}…`;
  const drawn = (done) => {
    if (done < settings.n) ui.status.textContent = `${drawing} ${done} of ${settings.n}`;
  };
  const images = await inProgress(drawing, () =>
    stoppable((signal) => model.sample(settings, drawn, signal)),
  );
  await before();
  showBirds(model, images, settings.n);
  timings.grids = (timings.grids ?? 0) + 1;
  if (current && current !== model) await current.release(); // the model the page drew with
  current = model;
  shown = settings;
  decoded = false;
  fillForm(model, settings);
  const { n, seed, prior, temperature, noise } = settings;
  const ms = Math.round(performance.now() - start);
  described = `${n} birds from ${model.name}: seed ${seed}, ${prior} prior, temperature ${temperature}, pixel noise ${noise}${best} (${ms} ms)`;
  ui.status.textContent = described;
}

// `task(signal)` with the Stop button (and Escape) able to abort `signal` while it runs: a draw of
// 256 birds at best of 16 takes minutes on a slow machine. The Stop button sits outside the
// fieldset that every action disables, so it is the one control that answers during a draw.
let stopper = null;

async function stoppable(task) {
  stopper = new AbortController();
  ui.stop.disabled = false;
  try {
    return await task(stopper.signal);
  } finally {
    stopper = null;
    ui.stop.disabled = true;
  }
}

function stop() {
  if (!stopper || stopper.signal.aborted) return;
  stopper.abort();
  ui.status.textContent = 'Stopping…';
}

// Another model: loaded, and its first grid drawn with its own defaults, before anything shows.
async function switchModel(name) {
  // No grid yet (the first model failed to load): the fields, checked as Draw checks them.
  const { n, seed, bestOf } = shown ?? {
    n: number(ui.count, 'the number of birds', { whole: true, min: 1, max: MAX_BIRDS }),
    seed: number(ui.seed, 'the seed', { whole: true, max: MAX_SEED }),
    bestOf: 1,
  };
  const model = await inProgress(`Loading ${name}…`, () =>
    Model.load(new URL(`models/${name}/`, document.baseURI), name),
  );
  const prior = model.priorNames[0];
  const noise = model.hasPixelNoise ? model.defaultNoise : 0;
  const settings = { n, seed, prior, temperature: model.defaultTemperature(prior), noise, bestOf };
  let shownPhoto = null; // the new model's reconstruction of the photo on the page, if any
  const file = photo;
  try {
    await drawBirds(model, settings, async () => {
      if (file) shownPhoto = await reconstructed(model, file);
    });
  } catch (error) {
    if (current !== model) await model.release(); // the page keeps the model it had
    throw error;
  }
  if (shownPhoto) showReconstruction(model, file, ...shownPhoto);
  else clearPhotoStatus(); // "no model is loaded" no longer holds
}

// The line beside the photo said why the last photo was refused: stale once a photo is shown
// again or a model is loaded.
function clearPhotoStatus() {
  ui.photoStatus.classList.remove('failed');
  ui.photoStatus.textContent = '';
  ui.photoStatus.hidden = true;
}

async function reconstructed(model, file) {
  return inProgress(`Reconstructing ${file.name} with ${model.name}…`, async () => {
    const prepared = await loadPhoto(file, model.size);
    const decoded = await model.decode(await model.encode(toModelInput(prepared, model.size)));
    return [prepared, toTiles(decoded, 1, model.size)[0]];
  });
}

async function reconstruct(file) {
  const model = requireModel();
  // The bytes, not the file: another model redoes this photo, and the file may be gone or
  // changed by then. A file too large to read is left to loadPhoto to refuse by its size.
  const kept =
    file.size <= MAX_PHOTO_BYTES
      ? new File([await readBytes(file, file.name)], file.name, { type: file.type })
      : file;
  showReconstruction(model, kept, ...(await reconstructed(model, kept)));
}

function showReconstruction(model, file, original, reconstruction) {
  clearPhotoStatus();
  show(ui.recon, row([original, reconstruction], model.size, defaultScale(model.size)));
  photo = file;
  const score = psnr(original, reconstruction).toFixed(2);
  ui.caption.textContent = `${file.name}, its centre at ${model.size} x ${model.size}, and what ${model.name} makes of it (PSNR ${score} dB)`;
}

function requireModel() {
  if (!current) throw new RangeError('no model is loaded: choose one');
  return current;
}

// Codes [[D numbers], ...] decoded to the decoder's mean images, drawn as the grid.
async function decodeCodes(codes) {
  const model = requireModel();
  const d = model.latentDim;
  if (!Array.isArray(codes) || codes.length < 1 || codes.length > MAX_BIRDS)
    throw new RangeError(`give 1 to ${MAX_BIRDS} codes`);
  if (!codes.every((code) => Array.isArray(code) && code.length === d && code.every(Number.isFinite))) {
    throw new RangeError(`each code must be ${d} finite numbers for ${model.name}`);
  }
  showBirds(model, await model.decode(Float32Array.from(codes.flat())), codes.length);
  decoded = true;
  described = `${codes.length} birds decoded from given codes by ${model.name}`;
  ui.status.textContent = described;
}

// Wiring --------------------------------------------------------------------------------------

async function readIndex() {
  const response = await fetch(MODELS_INDEX);
  if (!response.ok)
    throw new ModelError(`cannot fetch ${MODELS_INDEX}: the server answered ${response.status}`);
  const names = (await response.json()).models;
  if (!Array.isArray(names) || names.length === 0 || !names.every((name) => MODEL_NAME.test(name))) {
    throw new ModelError(`${MODELS_INDEX} must list the model folders' names`);
  }
  return names;
}

// The page is served where a browser will not let it check its models: a hosting problem.
class PageError extends Error {
  name = 'PageError';
}

async function start() {
  if (!window.isSecureContext) {
    throw new PageError(
      'This page must be opened over https or from localhost: only there do browsers give it ' +
        'SubtleCrypto, which it checks the model files with.',
    );
  }
  const names = await readIndex();
  ui.model.replaceChildren(...names.map((name) => new Option(name, name)));
  await switchModel(names[0]);
}

// `files` chosen or dropped; `types` the dropped data's types, for what was dropped instead of a
// file (text or a link dragged from a page, whose photo would have to be saved first).
function choosePhoto(files, types = []) {
  if (files.length !== 1) {
    const why = files.length
      ? 'drop one photo at a time'
      : [...types].some((type) => type === 'text/uri-list' || type === 'text/plain')
        ? 'what was dropped is text or a link, not a file: save the photo, then drop the file'
        : 'what was dropped is no photo file';
    return photoAction('', async () => {
      throw new PhotoError(why);
    });
  }
  return photoAction(`Reconstructing ${files[0].name}…`, () => reconstruct(files[0]));
}

// A photo's action, its progress and failure also said beside the photo: the page's status
// and error lines sit above the grid of birds, out of view once the user has scrolled down to
// the photo, where a refused photo looked like nothing happening. `message` shows at once,
// while the action may still wait for one under way (a long draw).
async function photoAction(message, task) {
  ui.photoStatus.classList.remove('failed');
  ui.photoStatus.textContent = message;
  ui.photoStatus.hidden = !message;
  await act(task);
  const failed = !ui.error.hidden;
  ui.photoStatus.classList.toggle('failed', failed);
  ui.photoStatus.textContent = failed ? ui.error.textContent : '';
  ui.photoStatus.hidden = !failed;
}

// The form's settings drawn, unless the canvas shows them already: Enter in a field both
// changes it and submits the form, which would draw the same grid twice.
function drawSettings() {
  const model = requireModel();
  const settings = readSettings();
  const same =
    current === model && shown && !decoded && Object.keys(settings).every((k) => settings[k] === shown[k]);
  return same ? undefined : drawBirds(model, settings);
}

ui.form.addEventListener('submit', (event) => {
  event.preventDefault();
  act(drawSettings);
});
// The submit a click makes is stamped when it is dispatched: the click is what says when.
ui.draw.addEventListener('click', (event) => {
  if (stale(event)) event.preventDefault();
});
// The seed after the form's: a seed just typed counts, as Draw's values do.
ui.newBirds.addEventListener('click', (event) => {
  if (stale(event)) return;
  act(() => {
    const settings = readSettings();
    return drawBirds(requireModel(), { ...settings, seed: (settings.seed + 1) % (MAX_SEED + 1) });
  });
});
ui.stop.addEventListener('click', stop);
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape') stop();
});
ui.model.addEventListener('change', () => act(() => switchModel(ui.model.value)));
ui.prior.addEventListener('change', () => {
  act(() => {
    const model = requireModel();
    return drawBirds(model, { ...readSettings(), temperature: model.defaultTemperature(ui.prior.value) });
  });
});
// Pressing Draw or New birds right after typing in a field: the field's change (made as the press
// takes the focus) drew at once and disabled the form before the button was released, so the
// click was lost. While a button is pressed, the change waits: the click does the drawing, and
// if the press ends without a click the change draws then.
let pressing = false;
let changeWaiting = false;
for (const button of [ui.draw, ui.newBirds]) {
  button.addEventListener('pointerdown', () => (pressing = true));
  button.addEventListener('click', () => (changeWaiting = false), { capture: true });
}
document.addEventListener('pointerup', () => {
  if (!pressing) return;
  pressing = false;
  setTimeout(() => {
    // after the click, if the press made one
    if (changeWaiting) act(drawSettings);
    changeWaiting = false;
  }, 0);
});
for (const input of [ui.temperature, ui.noise, ui.count, ui.seed, ui.bestOf]) {
  input.addEventListener('change', () => {
    if (pressing) changeWaiting = true;
    else act(drawSettings);
  });
}
ui.photoFile.addEventListener('change', () => {
  if (ui.photoFile.files.length) choosePhoto(ui.photoFile.files).finally(() => (ui.photoFile.value = ''));
});
// A photo dropped anywhere on the page: never let the browser navigate away to the file.
document.addEventListener('dragover', (event) => {
  event.preventDefault();
  ui.drop.classList.add('over');
});
document.addEventListener('dragleave', () => ui.drop.classList.remove('over'));
document.addEventListener('drop', (event) => {
  event.preventDefault();
  ui.drop.classList.remove('over');
  choosePhoto(event.dataTransfer.files, event.dataTransfer.types);
});

const ready = serial(start);
ready.catch((error) => {
  ui.model.selectedIndex = -1; // choosing the model again retries it
  showFailure(error);
  if (current || (error instanceof DOMException && error.name === 'AbortError')) return;
  // No model: the status line stops saying one is loading, and with none to choose (the
  // page cannot fetch or check its models) the form, which could only fail, stays disabled.
  const choices = ui.model.options.length > 0;
  ui.status.textContent = choices ? 'No model is loaded: choose one' : 'No model can be loaded';
  ui.settings.disabled = !choices;
});

window.birdvae = {
  ready, // resolves when the first grid is drawn; rejects with the reason it cannot be
  idle: () => queue, // resolves when no action is left to run
  timings, // firstGrid: ms from navigation to the first grid on the canvas; grids: grids drawn
  decodeCodes: (codes) => serial(() => decodeCodes(codes)),
  settings: () => (shown ? { model: current.name, ...shown } : null),
};
