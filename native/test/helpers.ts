import assert from 'node:assert/strict';
import type { TensorCodec, TensorStats } from '../api';
import { configureNative, nativeCodec, nativeInfo, nativeLoadError, typescriptCodec } from '../codec';

export { typescriptCodec };

/** Deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const SIZES = [0, 1, 2, 3, 7, 8, 15, 16, 17, 1023, 100003];
/** Large enough for the addon to split the work across threads. */
export const LARGE = (1 << 20) + 37;

export function randomBytes(n: number, seed: number): Uint8Array {
  const r = rng(seed);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (r() * 256) | 0;
  return b;
}

/** Float32 bit patterns that matter: zeros, subnormals, NaNs with payloads, infinities, extremes. */
export const SPECIAL_F32_BITS = [
  0x00000000, 0x80000000, // +-0
  0x00000001, 0x80000001, 0x007fffff, 0x807fffff, 0x00400000, // subnormals
  0x00800000, 0x80800000, // +-FLT_MIN
  0x7f7fffff, 0xff7fffff, // +-FLT_MAX
  0x7f800000, 0xff800000, // +-Inf
  0x7fc00000, 0xffc00000, 0x7f800001, 0x7fbfffff, 0xffffffff, 0x7fc12345, 0xff812345, // NaNs
  0x3f800000, 0xbf800000, 0x3dcccccd, // 1, -1, 0.1f
];

export function specialFloats(): Float32Array {
  return new Float32Array(new Uint32Array(SPECIAL_F32_BITS).buffer);
}

/**
 * Random float32 data: mostly normal-ish values of varied magnitude, with the
 * special patterns sprinkled in at a rate of `specialRate`.
 */
export function randomFloats(n: number, seed: number, specialRate = 0.02): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  const bits = new Uint32Array(out.buffer);
  const scale = 10 ** Math.floor(r() * 8 - 4);
  for (let i = 0; i < n; i++) {
    const u = r();
    if (u < specialRate) {
      bits[i] = SPECIAL_F32_BITS[(r() * SPECIAL_F32_BITS.length) | 0];
    } else {
      // sum of uniforms ~ normal, shifted so the mean is not zero
      out[i] = (r() + r() + r() - 1.2) * scale;
    }
  }
  return out;
}

/** Bitwise equality of two Float32Arrays (decode must be exact, NaN payloads included). */
export function assertSameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) {
    if (x[i] !== y[i]) {
      assert.fail(`${what}: element ${i}: 0x${x[i].toString(16)} != 0x${y[i].toString(16)} (${a[i]} vs ${b[i]})`);
    }
  }
}

/** Equality where every NaN equals every NaN and -0 !== +0. */
export function assertSameValues(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) {
    if (!(Object.is(a[i], b[i]) || (Number.isNaN(a[i]) && Number.isNaN(b[i])))) {
      assert.fail(`${what}: element ${i}: ${a[i]} vs ${b[i]}`);
    }
  }
}

const EXACT_STATS: (keyof TensorStats)[] = [
  'min', 'max', 'absMax', 'nanCount', 'posInfCount', 'negInfCount', 'zeroCount', 'count',
];

/**
 * Statistics parity: order-independent fields exactly; the double sums
 * (mean, std, l2Norm) exactly when `exact`, else to within rounding.
 */
export function assertStatsClose(got: TensorStats, want: TensorStats, what: string, exact: boolean): void {
  assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort(), `${what}: fields`);
  for (const k of EXACT_STATS) assert.ok(Object.is(got[k], want[k]), `${what}: ${k} ${got[k]} vs ${want[k]}`);
  for (const k of ['mean', 'std', 'l2Norm'] as const) {
    const g = got[k];
    const w = want[k];
    if (Number.isNaN(w) || exact) {
      assert.ok(Object.is(g, w), `${what}: ${k} ${g} vs ${w}`);
      continue;
    }
    // Sums in a different order: relative error ~1e-16 per term; allow 1e-9
    // of the data's magnitude (std: sqrt of a variance that may cancel).
    const mag = Math.max(Math.abs(w), want.absMax);
    const tol = k === 'std' ? 1e-6 * want.absMax + 1e-9 * Math.abs(w) : 1e-9 * mag;
    assert.ok(Math.abs(g - w) <= tol, `${what}: ${k} ${g} vs ${w} (tol ${tol})`);
  }
}

export interface NativeVariant {
  name: string;
  simd: boolean;
  threads: number;
  /** Stats sums in the same order as the TypeScript codec. */
  exactStats: boolean;
}

/** The addon configurations every parity test runs against. */
export function nativeVariants(): NativeVariant[] {
  const info = nativeInfo();
  if (!info) return [];
  const v: NativeVariant[] = [
    { name: 'scalar, 1 thread', simd: false, threads: 1, exactStats: true },
    { name: 'scalar, 3 threads', simd: false, threads: 3, exactStats: false },
  ];
  if (info.cpuAvx2 && info.cpuF16c && info.cpuFma && info.avx2Compiled) {
    v.push({ name: 'avx2+f16c+fma, 1 thread', simd: true, threads: 1, exactStats: false });
    v.push({ name: 'avx2+f16c+fma, 2 threads', simd: true, threads: 2, exactStats: false });
  }
  return v;
}

const defaults = nativeInfo();

/** Runs fn with the addon configured as `v`, restoring the defaults afterwards. */
export function withVariant<T>(v: NativeVariant, fn: (codec: TensorCodec) => T): T {
  const codec = nativeCodec();
  if (!codec) throw new Error('no native codec');
  configureNative({ simd: v.simd, threads: v.threads });
  try {
    return fn(codec);
  } finally {
    if (defaults) configureNative({ simd: defaults.simdEnabled, threads: defaults.threads });
  }
}

/** Reason to skip native tests, or false. Fails instead when DJINN_CODEC_REQUIRE_NATIVE=1. */
export function skipNative(): string | false {
  if (nativeCodec()) return false;
  if (process.env.DJINN_CODEC_REQUIRE_NATIVE === '1') {
    throw new Error(`DJINN_CODEC_REQUIRE_NATIVE=1 but the addon is not loaded: ${nativeLoadError()}`);
  }
  return `native addon not loaded: ${nativeLoadError()}`;
}
