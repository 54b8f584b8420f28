/**
 * Pure TypeScript tensor codec: the fallback used when the native addon is
 * missing, and the reference it is tested against.
 *
 * Results match the addon: decode, histogram and downsample2d bit for bit;
 * stats exactly for the scalar addon on one thread, and to within rounding of
 * the double-precision sums otherwise (the SIMD and threaded code add in a
 * different order). Browser-safe: no Node imports.
 */
import {
  checkBytes,
  checkDownsample,
  checkOut,
  checkHistogram,
  checkValues,
  DownsampleMode,
  DType,
  DTYPE_SIZE,
  HistogramResult,
  TensorStats,
} from './api';

export type { DType, DownsampleMode, HistogramResult, TensorStats } from './api';

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// ---------------------------------------------------------------------------
// decode

/** IEEE binary16 bits -> binary32 bits; NaNs keep their payload and become quiet (as F16C does). */
export function halfToFloatBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0) {
    if (mant === 0) return sign >>> 0;
    let e = 113;
    while ((mant & 0x400) === 0) {
      mant <<= 1;
      e--;
    }
    return (sign | (e << 23) | ((mant & 0x3ff) << 13)) >>> 0;
  }
  if (exp === 31) {
    if (mant === 0) return (sign | 0x7f800000) >>> 0;
    return (sign | 0x7f800000 | 0x400000 | (mant << 13)) >>> 0;
  }
  return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
}

let halfTable: Uint32Array | undefined;
function getHalfTable(): Uint32Array {
  if (!halfTable) {
    halfTable = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = halfToFloatBits(h);
  }
  return halfTable;
}

const ALIGN: Readonly<Record<DType, number>> = { bfloat16: 2, float16: 2, float32: 4, int8: 1, int32: 4, int64: 4 };

export function decode(bytes: Uint8Array, dtype: DType, out?: Float32Array): Float32Array {
  return decodeImpl('decode', bytes, dtype, out);
}

export function decodeStats(bytes: Uint8Array, dtype: DType, out?: Float32Array): { values: Float32Array; stats: TensorStats } {
  const values = decodeImpl('decodeStats', bytes, dtype, out);
  return { values, stats: stats(values) };
}

function decodeImpl(fn: string, bytes: Uint8Array, dtype: DType, out?: Float32Array): Float32Array {
  const dt = checkBytes(bytes, dtype, fn);
  const n = bytes.byteLength / DTYPE_SIZE[dt];
  out = checkOut(fn, out, n, bytes) ?? new Float32Array(n);
  if (n === 0) return out;
  if (!LITTLE_ENDIAN) {
    decodeDataView(bytes, dt, out);
    return out;
  }
  // Typed-array views need an aligned offset; a misaligned slice is copied.
  let src = bytes;
  if (bytes.byteOffset % ALIGN[dt] !== 0) {
    src = new Uint8Array(bytes.byteLength);
    src.set(bytes);
  }
  const buf = src.buffer;
  const off = src.byteOffset;
  switch (dt) {
    case 'bfloat16': {
      const h = new Uint16Array(buf, off, n);
      const o = new Uint32Array(out.buffer, out.byteOffset, n);
      for (let i = 0; i < n; i++) o[i] = h[i] << 16;
      break;
    }
    case 'float16': {
      const h = new Uint16Array(buf, off, n);
      const o = new Uint32Array(out.buffer, out.byteOffset, n);
      const t = getHalfTable();
      for (let i = 0; i < n; i++) o[i] = t[h[i]];
      break;
    }
    case 'float32':
      new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(src); // bit copy: NaN payloads survive
      break;
    case 'int8': {
      const v = new Int8Array(buf, off, n);
      for (let i = 0; i < n; i++) out[i] = v[i];
      break;
    }
    case 'int32': {
      const v = new Int32Array(buf, off, n);
      for (let i = 0; i < n; i++) out[i] = v[i];
      break;
    }
    case 'int64': {
      // hi * 2^32 is exact and the addition rounds once: the nearest double.
      const w = new Int32Array(buf, off, 2 * n);
      for (let i = 0; i < n; i++) out[i] = w[2 * i + 1] * 4294967296 + (w[2 * i] >>> 0);
      break;
    }
  }
  return out;
}

function decodeDataView(bytes: Uint8Array, dt: DType, out: Float32Array): void {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const o = new Uint32Array(out.buffer, out.byteOffset, out.length);
  const n = out.length;
  for (let i = 0; i < n; i++) {
    switch (dt) {
      case 'bfloat16':
        o[i] = dv.getUint16(2 * i, true) << 16;
        break;
      case 'float16':
        o[i] = halfToFloatBits(dv.getUint16(2 * i, true));
        break;
      case 'float32':
        o[i] = dv.getUint32(4 * i, true);
        break;
      case 'int8':
        out[i] = dv.getInt8(i);
        break;
      case 'int32':
        out[i] = dv.getInt32(4 * i, true);
        break;
      case 'int64':
        out[i] = dv.getInt32(8 * i + 4, true) * 4294967296 + dv.getUint32(8 * i, true);
        break;
    }
  }
}

// ---------------------------------------------------------------------------
// stats

export function stats(values: Float32Array): TensorStats {
  const x = checkValues('stats', values);
  const n = x.length;
  // Shift for the variance sums (reduces cancellation): the first finite value.
  let K = 0;
  for (let i = 0; i < n; i++) {
    const v = x[i];
    if (v - v === 0) {
      K = v;
      break;
    }
  }
  let nanCount = 0;
  let posInfCount = 0;
  let negInfCount = 0;
  let zeroCount = 0;
  let count = 0;
  let mn = Infinity;
  let mx = -Infinity;
  let absMax = 0;
  let s1 = 0;
  let s2 = 0;
  let sq = 0;
  for (let i = 0; i < n; i++) {
    const v = x[i];
    if (v - v !== 0) {
      if (v !== v) nanCount++;
      else if (v > 0) posInfCount++;
      else negInfCount++;
      continue;
    }
    count++;
    if (v === 0) zeroCount++;
    if (v < mn) mn = v;
    else if (v === 0 && mn === 0 && 1 / v < 0) mn = v; // -0 < +0
    if (v > mx) mx = v;
    else if (v === 0 && mx === 0 && 1 / v > 0) mx = v;
    const a = v < 0 ? -v : v;
    if (a > absMax) absMax = a;
    const d = v - K;
    s1 += d;
    s2 += d * d;
    sq += v * v;
  }
  let mean = NaN;
  let std = NaN;
  if (count > 0) {
    const m1 = s1 / count;
    let variance = s2 / count - m1 * m1;
    if (variance < 0) variance = 0;
    mean = K + m1;
    std = Math.sqrt(variance);
  } else {
    mn = NaN;
    mx = NaN;
  }
  return {
    min: mn,
    max: mx,
    mean,
    std,
    l2Norm: Math.sqrt(sq),
    absMax: absMax === 0 ? 0 : absMax,
    nanCount,
    posInfCount,
    negInfCount,
    zeroCount,
    count,
  };
}

// ---------------------------------------------------------------------------
// histogram

export function histogram(values: Float32Array, bins: number, lo: number, hi: number): HistogramResult {
  const a = checkHistogram(values, bins, lo, hi);
  const x = a.values;
  const n = x.length;
  const counts = new Uint32Array(a.bins);
  const top = a.bins - 1;
  const scale = a.scale;
  let below = 0;
  let above = 0;
  let nanCount = 0;
  let infCount = 0;
  for (let i = 0; i < n; i++) {
    const v = x[i];
    if (v - v !== 0) {
      if (v !== v) nanCount++;
      else infCount++;
    } else if (v < lo) {
      below++;
    } else if (v > hi) {
      above++;
    } else {
      const t = (v - lo) * scale; // >= 0
      counts[t >= top ? top : t | 0]++;
    }
  }
  return { counts, below, above, nanCount, infCount };
}

// ---------------------------------------------------------------------------
// downsample2d

/** starts[j] = floor(j * total / parts), j = 0..parts, computed exactly. */
export function blockStarts(total: number, parts: number): Float64Array {
  const s = new Float64Array(parts + 1);
  const q = Math.floor(total / parts);
  const r = total % parts;
  if (parts * r <= Number.MAX_SAFE_INTEGER) {
    for (let j = 0; j <= parts; j++) s[j] = j * q + Math.floor((j * r) / parts);
  } else {
    const P = BigInt(parts);
    const T = BigInt(total);
    for (let j = 0; j <= parts; j++) s[j] = Number((BigInt(j) * T) / P);
  }
  return s;
}

const NO_KEY = -2147483648;

export function downsample2d(
  values: Float32Array,
  rows: number,
  cols: number,
  outRows: number,
  outCols: number,
  mode: DownsampleMode,
  out?: Float32Array,
): Float32Array {
  const a = checkDownsample(values, rows, cols, outRows, outCols, mode);
  const x = a.values;
  const R = Math.min(a.rows, a.outRows);
  const C = Math.min(a.cols, a.outCols);
  out = checkOut('downsample2d', out, R * C, x) ?? new Float32Array(R * C);
  if (R === 0 || C === 0) return out;
  const W = a.cols;
  const rowStart = blockStarts(a.rows, R);
  const colStart = blockStarts(W, C);
  if (a.mode === 'max') {
    // Maximum under the float total order (-0 < +0) via int keys, so the sign
    // of a zero result is well defined and matches the addon.
    const bits = new Int32Array(x.buffer, x.byteOffset, x.length);
    const outBits = new Int32Array(out.buffer, out.byteOffset, out.length);
    const key = new Int32Array(W);
    for (let r = 0; r < R; r++) {
      key.fill(NO_KEY);
      for (let i = rowStart[r], iend = rowStart[r + 1]; i < iend; i++) {
        const base = i * W;
        for (let c = 0; c < W; c++) {
          const b = bits[base + c];
          if ((b & 0x7fffffff) > 0x7f800000) continue; // NaN
          const k = b < 0 ? b ^ 0x7fffffff : b;
          if (k > key[c]) key[c] = k;
        }
      }
      const o = r * C;
      for (let j = 0; j < C; j++) {
        let m = NO_KEY;
        for (let c = colStart[j], cend = colStart[j + 1]; c < cend; c++) if (key[c] > m) m = key[c];
        outBits[o + j] = m === NO_KEY ? 0x7fc00000 : m < 0 ? m ^ 0x7fffffff : m;
      }
    }
    return out;
  }
  // mean: column sums over the block's rows (in row order), then the sums of
  // the block's columns (in column order), in doubles, as the addon does.
  const acc = new Float64Array(W);
  const cnt = new Uint32Array(W);
  for (let r = 0; r < R; r++) {
    acc.fill(0);
    cnt.fill(0);
    for (let i = rowStart[r], iend = rowStart[r + 1]; i < iend; i++) {
      const base = i * W;
      for (let c = 0; c < W; c++) {
        const v = x[base + c];
        if (v === v) {
          acc[c] += v;
          cnt[c]++;
        }
      }
    }
    const o = r * C;
    for (let j = 0; j < C; j++) {
      let s = 0;
      let m = 0;
      for (let c = colStart[j], cend = colStart[j + 1]; c < cend; c++) {
        s += acc[c];
        m += cnt[c];
      }
      out[o + j] = m === 0 ? NaN : s / m;
    }
  }
  return out;
}

/** The fallback as a TensorCodec object. */
export const typescriptCodec = { decode, decodeStats, stats, histogram, downsample2d };
