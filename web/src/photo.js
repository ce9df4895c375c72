// A photo the user drops, as the model sees it: the page's counterpart of runtime/photos.py.
//
// The file is hostile until proven otherwise: its size is checked before it is read and its
// pixel count before it is decoded, so a huge or crafted file is refused instead of freezing
// the tab. The browser's own decoder reads it (JPEG, PNG, WebP, GIF, AVIF, BMP, told by their
// first bytes and checked whole; EXIF orientation applied); transparency lands on white, and the
// centre square is resized to S by Lanczos, as photos.py does. A large photo is first brought down to 8 S by the browser's own filter, as PIL
// reads a large JPEG at a reduced scale, so the Lanczos pass stays small.

import { resizeSquare } from './resize.js';

const MAX_PHOTO_BYTES = 50 * 1000 * 1000;
const MAX_PHOTO_PIXELS = 50 * 1000 * 1000; // about 8000 x 6000; 200 MB once decoded
const LANCZOS_FROM = 8; // the Lanczos pass reads at most 8 S x 8 S pixels

export class PhotoError extends Error {
  name = 'PhotoError';
}

const TAIL_BYTES = 64 * 1024; // where a whole file's end marker is looked for

// The raster formats the page reads, by their first bytes: what a browser would also render (an
// SVG, whose foreignObject even taints the canvas) is no photo, as bird-gen does not read it.
const FORMATS = [
  { name: 'JPEG', test: (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff },
  { name: 'PNG', test: (b) => ascii(b, 1, 4) === 'PNG' && b[0] === 0x89 },
  { name: 'GIF', test: (b) => ascii(b, 0, 4) === 'GIF8' },
  { name: 'WebP', test: (b) => ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 12) === 'WEBP' },
  { name: 'BMP', test: (b) => ascii(b, 0, 2) === 'BM' },
  { name: 'AVIF', test: (b) => ascii(b, 4, 8) === 'ftyp' && /^avi[fs]$/.test(ascii(b, 8, 12)) },
];

function ascii(bytes, start, end) {
  return String.fromCharCode(...bytes.subarray(start, end));
}

function contains(bytes, marker) {
  for (let i = bytes.length - marker.length; i >= 0; i--) {
    if (marker.every((value, j) => bytes[i + j] === value)) return true;
  }
  return false;
}

// The photo's format, checked to be whole: a browser draws a JPEG or PNG cut short with its
// missing rows white, where bird-gen refuses it ("image file is truncated").
async function checkFormat(file, name) {
  const head = new Uint8Array(await file.slice(0, 16).arrayBuffer());
  const format = FORMATS.find(({ test }) => test(head));
  if (!format) {
    throw new PhotoError(
      `${name}: cannot read it as an image (the page reads JPEG, PNG, WebP, GIF, BMP and AVIF photos)`,
    );
  }
  const tail = new Uint8Array(await file.slice(-TAIL_BYTES).arrayBuffer());
  const whole = {
    JPEG: () => contains(tail, [0xff, 0xd9]), // end of image: no coded data holds FF D9
    PNG: () => contains(tail, [0x49, 0x45, 0x4e, 0x44]), // the IEND chunk
    WebP: () => new DataView(head.buffer).getUint32(4, true) + 8 <= file.size,
  }[format.name];
  if (whole && !whole()) throw new PhotoError(`${name}: the ${format.name} file is cut short`);
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
