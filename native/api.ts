/**
 * Types and argument checks shared by the tensor codec backends.
 *
 * Browser-safe: no Node imports, so the tensor viewer's webview can use the
 * TypeScript codec too. The native addon (src/addon.cc) performs the same
 * checks with the same error classes and messages.
 */

export type DType = 'bfloat16' | 'float16' | 'float32' | 'int8' | 'int32' | 'int64';
export type DownsampleMode = 'mean' | 'max';

export const DTYPES: readonly DType[] = ['bfloat16', 'float16', 'float32', 'int8', 'int32', 'int64'];

/** Bytes per element of each dtype. */
export const DTYPE_SIZE: Readonly<Record<DType, number>> = {
  bfloat16: 2,
  float16: 2,
  float32: 4,
  int8: 1,
  int32: 4,
  int64: 8,
};

/**
 * One-pass statistics. min, max, mean and std (population, divide by count)
 * are over the finite values and NaN when there are none; l2Norm and absMax
 * are over the finite values and 0 when there are none. count is the number
 * of finite values; zeroCount counts +0 and -0. For min, -0 < +0.
 */
export interface TensorStats {
  min: number;
  max: number;
  mean: number;
  std: number;
  l2Norm: number;
  absMax: number;
  nanCount: number;
  posInfCount: number;
  negInfCount: number;
  zeroCount: number;
  count: number;
}

/**
 * Histogram of the finite values in [lo, hi]: bin i covers
 * [lo + i*w, lo + (i+1)*w) with w = (hi - lo) / bins, and the last bin also
 * holds hi. Finite values outside the range are counted in below/above;
 * NaN and +-Inf are excluded and counted.
 */
export interface HistogramResult {
  counts: Uint32Array;
  below: number;
  above: number;
  nanCount: number;
  infCount: number;
}

export interface TensorCodec {
  /**
   * Little-endian bytes to float32. int64 goes through the nearest double.
   * With `out` (exactly bytes.length / element size long, not sharing memory
   * with `bytes`), writes there and returns it instead of allocating.
   */
  decode(bytes: Uint8Array, dtype: DType, out?: Float32Array): Float32Array;
  /**
   * decode and stats in one pass over memory (the addon computes the
   * statistics from registers while it writes the values).
   */
  decodeStats(bytes: Uint8Array, dtype: DType, out?: Float32Array): { values: Float32Array; stats: TensorStats };
  stats(values: Float32Array): TensorStats;
  histogram(values: Float32Array, bins: number, lo: number, hi: number): HistogramResult;
  /**
   * Row-major rows x cols -> downsampleShape(...).rows x .cols. Output pixel
   * (r, c) covers input rows [floor(r*rows/R), floor((r+1)*rows/R)) and the
   * same for columns. NaNs are skipped; a block of only NaNs gives NaN. Mean
   * sums in doubles; max orders -0 below +0. `out` as for decode.
   */
  downsample2d(
    values: Float32Array,
    rows: number,
    cols: number,
    outRows: number,
    outCols: number,
    mode: DownsampleMode,
    out?: Float32Array,
  ): Float32Array;
}

/** Shape of downsample2d's output: a dimension is kept when the target is not smaller. */
export function downsampleShape(rows: number, cols: number, outRows: number, outCols: number): { rows: number; cols: number } {
  return { rows: Math.min(rows, outRows), cols: Math.min(cols, outCols) };
}

// ---------------------------------------------------------------------------
// Argument checks (shared messages with the native addon).

export const MAX_ELEMENTS = 0xffffffff;
export const MAX_BINS = 16777216;

const typedArrayTag = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype), Symbol.toStringTag)!
  .get as (this: unknown) => string | undefined;

/** Realm-independent typed array kind ('Uint8Array', 'Float32Array', ...), or undefined. */
export function typedArrayName(v: unknown): string | undefined {
  return typedArrayTag.call(v);
}

export function checkBytes(bytes: unknown, dtype: unknown, fn = 'decode'): DType {
  if (typedArrayName(bytes) !== 'Uint8Array') throw new TypeError(`${fn}: bytes must be a Uint8Array`);
  if (typeof dtype !== 'string') throw new TypeError(`${fn}: dtype must be a string, one of ${DTYPES.join(', ')}`);
  if (!(DTYPES as readonly string[]).includes(dtype)) {
    throw new RangeError(`${fn}: unknown dtype '${dtype}' (expected one of ${DTYPES.join(', ')})`);
  }
  const dt = dtype as DType;
  const size = DTYPE_SIZE[dt];
  const n = (bytes as Uint8Array).byteLength;
  if (n % size !== 0) {
    throw new RangeError(`${fn}: byte length ${n} is not a multiple of ${size} (the size of one ${dt} element)`);
  }
  if (n / size > MAX_ELEMENTS) throw new RangeError(`${fn}: more than 2^32-1 elements`);
  return dt;
}

export function checkValues(fn: string, values: unknown): Float32Array {
  if (typedArrayName(values) !== 'Float32Array') throw new TypeError(`${fn}: values must be a Float32Array`);
  const v = values as Float32Array;
  if (v.length > MAX_ELEMENTS) throw new RangeError(`${fn}: values has more than 2^32-1 elements`);
  return v;
}

export function checkNumber(fn: string, name: string, v: unknown): number {
  if (typeof v !== 'number') throw new TypeError(`${fn}: ${name} must be a number`);
  return v;
}

export interface HistogramArgs {
  values: Float32Array;
  bins: number;
  lo: number;
  hi: number;
  scale: number;
}

export function checkHistogram(values: unknown, bins: unknown, lo: unknown, hi: unknown): HistogramArgs {
  const v = checkValues('histogram', values);
  const b = checkNumber('histogram', 'bins', bins);
  const l = checkNumber('histogram', 'lo', lo);
  const h = checkNumber('histogram', 'hi', hi);
  if (!Number.isInteger(b) || b < 1 || b > MAX_BINS) {
    throw new RangeError('histogram: bins must be an integer from 1 to 16777216');
  }
  if (!Number.isFinite(l) || !Number.isFinite(h)) throw new RangeError('histogram: lo and hi must be finite');
  if (!(l < h)) throw new RangeError('histogram: lo must be less than hi');
  const scale = b / (h - l);
  if (!Number.isFinite(scale) || !Number.isFinite(h - l)) {
    throw new RangeError('histogram: the range [lo, hi] is too wide or too narrow for the number of bins');
  }
  return { values: v, bins: b, lo: l, hi: h, scale };
}

export interface DownsampleArgs {
  values: Float32Array;
  rows: number;
  cols: number;
  outRows: number;
  outCols: number;
  mode: DownsampleMode;
}

export function checkDownsample(
  values: unknown,
  rows: unknown,
  cols: unknown,
  outRows: unknown,
  outCols: unknown,
  mode: unknown,
): DownsampleArgs {
  const fn = 'downsample2d';
  const v = checkValues(fn, values);
  const r = checkNumber(fn, 'rows', rows);
  const c = checkNumber(fn, 'cols', cols);
  const orows = checkNumber(fn, 'outRows', outRows);
  const ocols = checkNumber(fn, 'outCols', outCols);
  if (typeof mode !== 'string') throw new TypeError("downsample2d: mode must be the string 'mean' or 'max'");
  if (mode !== 'mean' && mode !== 'max') throw new RangeError(`downsample2d: mode must be 'mean' or 'max', got '${mode}'`);
  if (!Number.isInteger(r) || !Number.isInteger(c) || r < 0 || c < 0) {
    throw new RangeError('downsample2d: rows and cols must be non-negative integers');
  }
  if (!Number.isInteger(orows) || !Number.isInteger(ocols) || orows < 1 || ocols < 1) {
    throw new RangeError('downsample2d: outRows and outCols must be integers >= 1');
  }
  if (r * c !== v.length) {
    throw new RangeError(`downsample2d: rows * cols = ${r * c} does not match values.length = ${v.length}`);
  }
  return { values: v, rows: r, cols: c, outRows: orows, outCols: ocols, mode };
}

/** The optional `out` argument of decode and downsample2d; undefined means allocate. */
export function checkOut(fn: string, out: unknown, n: number, input: ArrayBufferView): Float32Array | undefined {
  if (out === undefined) return undefined;
  if (typedArrayName(out) !== 'Float32Array') throw new TypeError(`${fn}: out must be a Float32Array`);
  const o = out as Float32Array;
  if (o.length !== n) throw new RangeError(`${fn}: out.length = ${o.length}, expected ${n}`);
  if (
    o.buffer === input.buffer &&
    o.byteLength > 0 &&
    input.byteLength > 0 &&
    o.byteOffset < input.byteOffset + input.byteLength &&
    input.byteOffset < o.byteOffset + o.byteLength
  ) {
    throw new RangeError(`${fn}: out must not share memory with the input`);
  }
  return o;
}
