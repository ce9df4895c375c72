// Figures as bird-gen lays them out (runtime/images.py): tiles on a white ground with a 2-pixel
// gutter, each pixel a crisp scale x scale block. The whole figure is composed in memory and put
// on the canvas at once, so a canvas never shows half a grid, and its pixels are exactly
// bird-gen's (the browser tests compare them with images.grid).

export const GUTTER = 2;
const BACKGROUND = 255;

// (rows, cols) of the near-square grid for n tiles (images.grid_shape).
export function gridShape(n) {
  const cols = Math.ceil(Math.sqrt(n));
  return [Math.ceil(n / cols), cols];
}

// The scale that makes each tile about 128 pixels wide, as bird-gen's default.
export const defaultScale = (size) => Math.max(1, Math.floor(128 / size));

// RGBA tiles [S * S * 4] at (row, col) cells of a rows x cols figure: { width, height, data }.
function compose(tiles, cells, rows, cols, size, scale) {
  const side = size * scale;
  const width = cols * side + (cols + 1) * GUTTER;
  const height = rows * side + (rows + 1) * GUTTER;
  const figure = { width, height, data: new Uint8ClampedArray(width * height * 4).fill(BACKGROUND) };
  // Whole RGBA pixels as 32-bit words: one copy a pixel, and one copy a row for its repeats.
  const pixels = new Uint32Array(figure.data.buffer);
  tiles.forEach((tile, i) => {
    const source = new Uint32Array(tile.buffer, tile.byteOffset, size * size);
    const [row, col] = cells[i];
    const top = GUTTER + row * (side + GUTTER);
    const left = GUTTER + col * (side + GUTTER);
    for (let y = 0; y < size; y++) {
      const first = (top + y * scale) * width + left;
      for (let x = 0; x < side; x++) pixels[first + x] = source[y * size + Math.floor(x / scale)];
      for (let repeat = 1; repeat < scale; repeat++) {
        pixels.copyWithin(first + repeat * width, first, first + side);
      }
    }
  });
  return figure;
}

export function grid(tiles, size, scale) {
  const [rows, cols] = gridShape(tiles.length);
  const cells = tiles.map((_, i) => [Math.floor(i / cols), i % cols]);
  return compose(tiles, cells, rows, cols, size, scale);
}

export function row(tiles, size, scale) {
  return compose(
    tiles,
    tiles.map((_, i) => [0, i]),
    1,
    tiles.length,
    size,
    scale,
  );
}

export function show(canvas, figure) {
  canvas.width = figure.width;
  canvas.height = figure.height;
  canvas.getContext('2d').putImageData(new ImageData(figure.data, figure.width, figure.height), 0, 0);
}

// Peak signal-to-noise ratio in dB between two RGBA tiles, over RGB (images.psnr).
export function psnr(reference, image) {
  let squares = 0;
  let count = 0;
  for (let i = 0; i < reference.length; i++) {
    if (i % 4 === 3) continue;
    squares += (reference[i] - image[i]) ** 2;
    count++;
  }
  return squares === 0 ? Infinity : 10 * Math.log10((255 * 255 * count) / squares);
}
