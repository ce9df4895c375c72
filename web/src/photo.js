// A photo the user drops, as the model sees it: the page's counterpart of runtime/photos.py.
//
// The file is hostile until proven otherwise: its size is checked before it is read and its
// pixel count before it is decoded, so a huge or crafted file is refused instead of freezing
// the tab. The browser's own decoder reads it (JPEG, PNG, WebP, GIF, AVIF, BMP, told by their
// first bytes and checked whole; EXIF orientation applied); transparency lands on white, and the
// centre square is resized to S by Lanczos, as photos.py does. A large photo is first brought down to 8 S by the browser's own filter, as PIL
// reads a large JPEG at a reduced scale, so the Lanczos pass stays small.

import { resizeSquare } from './resize.js';

export const MAX_PHOTO_BYTES = 50 * 1000 * 1000;
const MAX_PHOTO_PIXELS = 50 * 1000 * 1000; // about 8000 x 6000; 200 MB once decoded
const LANCZOS_FROM = 8; // the Lanczos pass reads at most 8 S x 8 S pixels

export class PhotoError extends Error {
  name = 'PhotoError';
}

// The bytes of `blob` (a file, or a part of one); a file that moved or changed since it was
// chosen is the photo's problem, said as such.
export async function readBytes(blob, name) {
  try {
    return new Uint8Array(await blob.arrayBuffer());
  } catch (error) {
    throw new PhotoError(`${name}: cannot read the file (${error.message})`);
  }
}

const HEAD_BYTES = 64; // enough for every format's signature and an AVIF's list of brands

// The raster formats the page reads, by their first bytes: what a browser would also render (an
// SVG, whose foreignObject even taints the canvas) is no photo, as bird-gen does not read it.
const FORMATS = [
  { name: 'JPEG', test: (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff },
  { name: 'PNG', test: (b) => b[0] === 0x89 && ascii(b, 1, 4) === 'PNG' },
  { name: 'GIF', test: (b) => ascii(b, 0, 4) === 'GIF8' },
  { name: 'WebP', test: (b) => ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 12) === 'WEBP' },
  { name: 'BMP', test: (b) => ascii(b, 0, 2) === 'BM' },
  { name: 'AVIF', test: isAvif },
];

function ascii(bytes, start, end) {
  return String.fromCharCode(...bytes.subarray(start, end));
}

// The brands an ISO file's ftyp box names: its own, then its compatible ones; none if no ftyp.
function brandsOf(b) {
  if (ascii(b, 4, 8) !== 'ftyp') return [];
  const end = Math.min(b.length, new DataView(b.buffer, b.byteOffset).getUint32(0));
  const brands = [ascii(b, 8, 12)];
  for (let at = 16; at + 4 <= end; at += 4) brands.push(ascii(b, at, at + 4));
  return brands;
}

// An ISO file whose ftyp box names AVIF as its brand or among its compatible ones.
function isAvif(b) {
  const brands = brandsOf(b);
  return brands.includes('avif') || brands.includes('avis');
}

// An HEVC-coded HEIF file (HEIC, as iPhones save photos): an ISO file that names one of HEIC's
// brands, as its own or among its compatible ones (a plain mif1 HEIF may hold other codings).
function isHeic(b) {
  const heic = ['heic', 'heix', 'heim', 'heis', 'hevc', 'hevx'];
  return brandsOf(b).some((brand) => heic.includes(brand));
}

const isRestart = (marker) => marker >= 0xd0 && marker <= 0xd7;

// Whether a JPEG reaches its end-of-image marker: its segments walked by their lengths, each
// scan's coded data to the marker after it, as a decoder reads it. Data after the end (a motion
// photo's video) is the camera's business; a file that stops before it is cut short.
function jpegIsWhole(bytes) {
  let at = 2;
  while (at + 1 < bytes.length) {
    if (bytes[at] !== 0xff) {
      at += 1; // stray bytes before a marker, which decoders skip
      continue;
    }
    const marker = bytes[at + 1];
    at += 2;
    if (marker === 0xd9) return true;
    if (marker === 0xff) at -= 1; // a fill byte: the marker is after it
    if (marker === 0xff || marker === 0x01 || isRestart(marker)) continue; // no length
    if (at + 2 > bytes.length) return false;
    at += (bytes[at] << 8) | bytes[at + 1];
    if (marker !== 0xda) continue;
    // After a scan's header its coded data: FF 00 is a stuffed FF and FF D0-D7 a restart,
    // anything else after FF the next marker.
    while (at + 1 < bytes.length) {
      if (bytes[at] === 0xff && bytes[at + 1] !== 0x00 && !isRestart(bytes[at + 1])) break;
      at += 1;
    }
  }
  return false;
}

// Whether a PNG reaches its IEND chunk, its chunks walked by their lengths.
function pngIsWhole(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 8; at + 8 <= bytes.length;) {
    const type = ascii(bytes, at + 4, at + 8);
    at += 12 + view.getUint32(at);
    if (at > bytes.length) return false;
    if (type === 'IEND') return true;
  }
  return false;
}

// The photo's format, checked to be whole: a browser draws a JPEG or PNG cut short with its
// missing rows white, where bird-gen refuses it ("image file is truncated").
export async function checkFormat(file, name) {
  const head = await readBytes(file.slice(0, HEAD_BYTES), name);
  const format = FORMATS.find(({ test }) => test(head));
  if (!format && isHeic(head)) {
    throw new PhotoError(
      `${name}: a HEIC photo (as phones take), which this page does not read; save it as JPEG and drop that`,
    );
  }
  if (!format) {
    throw new PhotoError(
      `${name}: cannot read it as an image (the page reads JPEG, PNG, WebP, GIF, BMP and AVIF photos)`,
    );
  }
  const whole = {
    JPEG: async () => jpegIsWhole(await readBytes(file, name)),
    PNG: async () => pngIsWhole(await readBytes(file, name)),
    WebP: async () => new DataView(head.buffer).getUint32(4, true) + 8 <= file.size,
  }[format.name];
  if (whole && !(await whole())) throw new PhotoError(`${name}: the ${format.name} file is cut short`);
}

function loadImage(url, name) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () =>
      reject(
        new PhotoError(`${name}: cannot read it as an image (not a format this browser decodes, or damaged)`),
      );
    image.src = url;
  });
}

// The photo's centre square as RGBA bytes [size * size * 4].
export async function loadPhoto(file, size) {
  const name = file.name || 'the photo';
  if (file.size === 0) throw new PhotoError(`${name} is empty`);
  if (file.size > MAX_PHOTO_BYTES) {
    throw new PhotoError(
      `${name} is ${(file.size / 1e6).toFixed(1)} MB; the page reads photos of up to ${MAX_PHOTO_BYTES / 1e6} MB`,
    );
  }
  await checkFormat(file, name);
  const url = URL.createObjectURL(file);
  try {
    // Browsers decode pixels lazily, when an image is drawn or decode() asks; its size is known
    // at the load event, so the pixel budget is checked before any decoding is asked for.
    const image = await loadImage(url, name);
    const [width, height] = [image.naturalWidth, image.naturalHeight];
    if (width === 0 || height === 0) throw new PhotoError(`${name} has no size in pixels`);
    if (width * height > MAX_PHOTO_PIXELS) {
      throw new PhotoError(
        `${name} is ${width} x ${height} pixels; the page reads photos of up to ${MAX_PHOTO_PIXELS / 1e6} megapixels`,
      );
    }
    try {
      await image.decode();
    } catch {
      throw new PhotoError(`${name}: the image is damaged and cannot be decoded`);
    }
    const side = Math.min(width, height);
    const start = Math.min(side, LANCZOS_FROM * size);
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = start;
    const context = canvas.getContext('2d', { willReadFrequently: true });
    context.fillStyle = '#fff';
    context.fillRect(0, 0, start, start);
    context.imageSmoothingQuality = 'high';
    context.drawImage(
      image,
      Math.floor((width - side) / 2),
      Math.floor((height - side) / 2),
      side,
      side,
      0,
      0,
      start,
      start,
    );
    let pixels;
    try {
      pixels = context.getImageData(0, 0, start, start).data;
    } catch {
      throw new PhotoError(`${name}: the browser will not hand over its pixels`); // a tainted canvas
    }
    return resizeSquare(pixels, start, size);
  } finally {
    URL.revokeObjectURL(url);
  }
}

// RGBA bytes [S * S * 4] as the model's float32 [1, 3, S, S] in [0, 1] (images.from_uint8_hwc).
export function toModelInput(rgba, size) {
  const plane = size * size;
  const input = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) input[c * plane + p] = rgba[p * 4 + c] / 255;
  }
  return input;
}
