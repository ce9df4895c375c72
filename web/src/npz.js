// numpy's .npz (a zip of .npy files, stored or deflated) read in the browser, with limits.
//
// The page reads prior.npz as the model folder ships it, so the bytes it checks against the
// manifest's sha256 are the exporter's own and no converted copy can drift from them. Only what
// np.savez and np.savez_compressed write is read: one disk, no zip64, methods 0 and 8, and .npy
// arrays of little-endian float32 or float64 in C order. Every size is checked against what the
// caller expects before anything is inflated, so a hostile file cannot make the page allocate
// more than that. Zip CRCs are not checked: the whole file's sha256 already was.

export class NpzError extends Error {
  name = 'NpzError';
}

const END_OF_DIRECTORY = 0x06054b50;
const DIRECTORY_ENTRY = 0x02014b50;
const LOCAL_HEADER = 0x04034b50;
const MAX_COMMENT = 0xffff;

function endOfDirectory(view) {
  const last = view.byteLength - 22;
  for (let at = last; at >= Math.max(0, last - MAX_COMMENT); at--) {
    if (view.getUint32(at, true) === END_OF_DIRECTORY) return at;
  }
  throw new NpzError('it is not a zip file (no end-of-directory record)');
}

// name -> { method, offset, compressed, size } from the zip's central directory.
function directory(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.byteLength < 22) throw new NpzError('it is too short to be a zip file');
  const end = endOfDirectory(view);
  const count = view.getUint16(end + 10, true);
  let at = view.getUint32(end + 16, true);
  if (count === 0xffff || at === 0xffffffff) throw new NpzError('zip64 archives are not supported');
  const entries = new Map(); // not an object: a zip may name an entry __proto__
  for (let i = 0; i < count; i++) {
    if (at + 46 > view.byteLength || view.getUint32(at, true) !== DIRECTORY_ENTRY) {
      throw new NpzError('its zip directory is damaged');
    }
    const nameLength = view.getUint16(at + 28, true);
    const skip = nameLength + view.getUint16(at + 30, true) + view.getUint16(at + 32, true);
    const name = new TextDecoder().decode(bytes.subarray(at + 46, at + 46 + nameLength));
    entries.set(name, {
      method: view.getUint16(at + 10, true),
      compressed: view.getUint32(at + 20, true),
      size: view.getUint32(at + 24, true),
      header: view.getUint32(at + 42, true),
    });
    at += 46 + skip;
  }
  for (const entry of entries.values()) {
    const local = entry.header;
    if (local + 30 > view.byteLength || view.getUint32(local, true) !== LOCAL_HEADER) {
      throw new NpzError('a zip entry points outside the file');
    }
    entry.offset = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    if (entry.offset + entry.compressed > view.byteLength)
      throw new NpzError('a zip entry runs past the end of the file');
  }
  return entries;
}

// The entry's bytes, inflated if need be, refused past the size its directory declares.
async function inflate(bytes, entry, name) {
  const data = bytes.subarray(entry.offset, entry.offset + entry.compressed);
  if (entry.method === 0) {
    if (entry.compressed !== entry.size) throw new NpzError(`${name} is stored with two different sizes`);
    return data;
  }
  if (entry.method !== 8)
    throw new NpzError(`${name} uses zip method ${entry.method}; only stored and deflated are read`);
  const out = new Uint8Array(entry.size);
  let filled = 0;
  const reader = new Blob([data]).stream().pipeThrough(new DecompressionStream('deflate-raw')).getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (filled + value.length > out.length)
        throw new NpzError(`${name} inflates past its declared ${entry.size} bytes`);
      out.set(value, filled);
      filled += value.length;
    }
  } catch (error) {
    if (error instanceof NpzError) throw error;
    throw new NpzError(`${name} does not inflate (${error.message})`);
  } finally {
    reader.releaseLock();
  }
  if (filled !== out.length)
    throw new NpzError(`${name} inflates to ${filled} bytes, its zip entry says ${entry.size}`);
  return out;
}

const NPY_MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
const DTYPES = { '<f4': Float32Array, '<f8': Float64Array };

// One .npy file as { shape, data } with data a Float32Array or Float64Array.
function parseNpy(bytes, name) {
  if (bytes.length < 10 || NPY_MAGIC.some((byte, i) => bytes[i] !== byte))
    throw new NpzError(`${name} is not a .npy array`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = bytes[6];
  if (major < 1 || major > 3) throw new NpzError(`${name} is .npy version ${major}, not 1, 2 or 3`);
  const [headerLength, start] = major === 1 ? [view.getUint16(8, true), 10] : [view.getUint32(8, true), 12];
  if (start + headerLength > bytes.length) throw new NpzError(`${name} has a header longer than itself`);
  const header = new TextDecoder().decode(bytes.subarray(start, start + headerLength));
  const descr = /'descr':\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined)
    throw new NpzError(`${name} has an unreadable header`);
  if (!Object.hasOwn(DTYPES, descr))
    throw new NpzError(`${name} holds ${descr}; the page reads float32 or float64 ('<f4', '<f8')`);
  if (fortran === 'True') throw new NpzError(`${name} is in Fortran order; the page reads C order`);
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  if (shape.some((dim) => !Number.isSafeInteger(dim) || dim < 0))
    throw new NpzError(`${name} has a bad shape (${shapeText})`);
  const Type = DTYPES[descr];
  const count = shape.reduce((a, b) => a * b, 1);
  const offset = start + headerLength;
  if (bytes.length - offset !== count * Type.BYTES_PER_ELEMENT) {
    throw new NpzError(
      `${name} holds ${bytes.length - offset} bytes of data, its shape [${shape}] needs ${count * Type.BYTES_PER_ELEMENT}`,
    );
  }
  // A copy into a buffer of its own: the data's offset in the zip need not be aligned for a
  // typed-array view.
  const data = new Type(new Uint8Array(bytes.subarray(offset)).buffer);
  return { shape, data };
}

// The arrays named in `limits` ({ name: most bytes its .npy may hold }) from an .npz's bytes.
export async function readNpz(bytes, limits) {
  const entries = directory(bytes);
  const arrays = {};
  for (const [name, limit] of Object.entries(limits)) {
    const entry = entries.get(`${name}.npy`);
    if (entry === undefined) throw new NpzError(`it lacks the array ${name}`);
    if (entry.size > limit)
      throw new NpzError(`its array ${name} is ${entry.size} bytes, more than its shape allows`);
    arrays[name] = parseNpy(await inflate(bytes, entry, `${name}.npy`), `${name}.npy`);
  }
  return arrays;
}
