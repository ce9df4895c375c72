// A photo the user drops, as the model sees it: the page's counterpart of runtime/photos.py.
//
// The file is hostile until proven otherwise: its size is checked before it is read and its
// pixel count before it is decoded, so a huge or crafted file is refused instead of freezing
// the tab. The browser's own decoder reads it (JPEG, PNG, WebP, GIF, AVIF, BMP; EXIF orientation
// applied); transparency lands on white, and the centre square is resized to S by Lanczos, as
// photos.py does. A large photo is first brought down to 8 S by the browser's own filter, as PIL
// reads a large JPEG at a reduced scale, so the Lanczos pass stays small.

import { resizeSquare } from './resize.js';

const MAX_PHOTO_BYTES = 50 * 1000 * 1000;
const MAX_PHOTO_PIXELS = 50 * 1000 * 1000; // about 8000 x 6000; 200 MB once decoded
const LANCZOS_FROM = 8; // the Lanczos pass reads at most 8 S x 8 S pixels

export class PhotoError extends Error {
  name = 'PhotoError';
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
    return resizeSquare(context.getImageData(0, 0, start, start).data, start, size);
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
