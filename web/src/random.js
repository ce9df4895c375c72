// The page's own seeded random numbers: the same seed draws the same birds in every browser.
//
// Generator: xoshiro128** 1.1 (Blackman and Vigna, "Scrambled linear pseudorandom number
// generators", 2018): 128 bits of state, 32-bit outputs, period 2^128 - 1, nothing but 32-bit
// integer arithmetic, so every JavaScript engine gives the same bits. Its state is seeded from
// SplitMix64 (Steele, Lea and Flood, 2014) run from the seed, the seeding its authors advise.
//
// Like the Python runtime's Draws, one seed makes three streams: component picks, the codes'
// Gaussian noise and the pixel noise. Each fills its numbers in order, so pixel noise never
// moves the codes and 64 + 36 birds are the first 100 birds. The bytes differ from numpy's: a
// seed means the same birds within the page, not the same birds as bird-gen.

const STREAMS = ['picks', 'noise', 'pixels'];
const MASK64 = (1n << 64n) - 1n;
export const MAX_SEED = Number.MAX_SAFE_INTEGER; // seeds are integers 0 .. 2^53 - 1

// SplitMix64: the seed's sequence of 64-bit words, which fill the streams' states in turn.
function* splitMix64(seed) {
  let state = BigInt(seed);
  for (;;) {
    state = (state + 0x9e3779b97f4a7c15n) & MASK64;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    yield z ^ (z >> 31n);
  }
}

const rotl = (x, k) => ((x << k) | (x >>> (32 - k))) >>> 0;

export class Xoshiro128 {
  constructor(s0, s1, s2, s3) {
    if ((s0 | s1 | s2 | s3) === 0) throw new Error('xoshiro128** state must not be all zero');
    this.s = Uint32Array.of(s0, s1, s2, s3);
    this.spare = null; // Box-Muller makes normals in pairs; the second waits here
  }

  nextUint32() {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  // A double uniform on [0, 1): 53 random bits from two outputs.
  uniform() {
    const high = this.nextUint32() >>> 5; // 27 bits
    const low = this.nextUint32() >>> 6; // 26 bits
    return (high * 67108864 + low) / 9007199254740992;
  }

  // A standard normal by the Box-Muller transform. 1 - u is in (0, 1], so the log is finite.
  normal() {
    if (this.spare !== null) {
      const value = this.spare;
      this.spare = null;
      return value;
    }
    const radius = Math.sqrt(-2 * Math.log(1 - this.uniform()));
    const angle = 2 * Math.PI * this.uniform();
    this.spare = radius * Math.sin(angle);
    return radius * Math.cos(angle);
  }

  fillNormal(array) {
    for (let i = 0; i < array.length; i++) array[i] = this.normal();
    return array;
  }
}

function checkSeed(seed) {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RangeError(`the seed must be a whole number from 0 to ${MAX_SEED}, got ${seed}`);
  }
  return seed;
}

// The three streams of one seed: { picks, noise, pixels }, each an Xoshiro128.
export function draws(seed) {
  const words = splitMix64(checkSeed(seed));
  const streams = {};
  for (const name of STREAMS) {
    const [a, b] = [words.next().value, words.next().value];
    const parts = [a >> 32n, a & 0xffffffffn, b >> 32n, b & 0xffffffffn].map(Number);
    streams[name] = new Xoshiro128(...parts);
  }
  return streams;
}
