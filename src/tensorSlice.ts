// Which part of a tensor the viewer shows, as GetTensor slices, and the decoding of what
// comes back: bytes in the tensor's own dtype, decoded on the client by the native codec
// (its TypeScript fallback when the addon is missing). No `vscode` import (unit-tested).
import type { DimSlice } from "../client";
import * as codec from "../native/codec";

/** rows and cols pick two dims (-1 = a virtual size-1 dim for 0-D/1-D tensors); index fixes the others. */
export interface SliceView {
  rowDim: number;
  colDim: number;
  index: number[];
}

export interface SlicePlan {
  slice: DimSlice[];
  rows: number;
  cols: number;
  stride: number;
  /** the data comes back as [cols][rows] and must be transposed */
  transpose: boolean;
}

/** At most this many elements are fetched for one picture (4 MB of float32 once decoded). */
export const MAX_SLICE_ELEMENTS = 1 << 20;

/** The default view: the last two dims (1-D: one row), leading dims at index 0 (or `prefix`). */
export function defaultView(shape: number[], prefix: number[] = []): SliceView {
  const n = shape.length;
  const index = shape.map((_, d) => (d < prefix.length ? prefix[d] : 0));
  if (n === 0) return { rowDim: -1, colDim: -1, index };
  if (n === 1) return { rowDim: -1, colDim: 0, index };
  // The last two dims not fixed by the prefix; when the prefix fixes too many, the last two.
  const free = shape.map((_, d) => d).filter((d) => d >= prefix.length);
  const [rowDim, colDim] = free.length >= 2 ? free.slice(-2) : [n - 2, n - 1];
  return { rowDim, colDim, index };
}

export function normalizeView(shape: number[], v: SliceView): SliceView {
  const n = shape.length;
  let { rowDim, colDim } = v;
  const ok = (d: number) => Number.isInteger(d) && d >= -1 && d < n;
  if (!ok(rowDim) || !ok(colDim) || (rowDim === colDim && rowDim !== -1)) return defaultView(shape);
  if (n >= 1 && colDim === -1) [rowDim, colDim] = [colDim, rowDim];
  const index = shape.map((size, d) => Math.max(0, Math.min(size - 1, Math.trunc(v.index?.[d] ?? 0))));
  return { rowDim, colDim, index };
}

export function planSlice(shape: number[], view: SliceView, maxElements = MAX_SLICE_ELEMENTS): SlicePlan {
  const v = normalizeView(shape, view);
  const size = (d: number) => (d < 0 ? 1 : shape[d]);
  const total = size(v.rowDim) * size(v.colDim);
  const stride = total > maxElements ? Math.ceil(Math.sqrt(total / maxElements)) : 1;
  const slice: DimSlice[] = shape.map((_, d) =>
    d === v.rowDim || d === v.colDim ? { start: 0, stop: 0, step: stride > 1 ? stride : 0 } : { start: v.index[d], stop: v.index[d] + 1, step: 0 },
  );
  const along = (d: number) => (d < 0 ? 1 : Math.ceil(shape[d] / stride));
  return { slice, rows: along(v.rowDim), cols: along(v.colDim), stride, transpose: v.rowDim >= 0 && v.colDim >= 0 && v.rowDim > v.colDim };
}

const CODEC_DTYPES = new Set<string>(codec.DTYPES);

/** Bytes of `dtype` to float32: the codec for its dtypes, a small local decoder for the rest. */
export function decodeBytes(data: Uint8Array, dtype: string): Float32Array {
  if (CODEC_DTYPES.has(dtype)) return codec.decode(data, dtype as codec.DType);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const size = dtype === "float64" ? 8 : dtype === "int16" ? 2 : 1;
  const out = new Float32Array(Math.floor(data.byteLength / size));
  for (let i = 0; i < out.length; i++) {
    switch (dtype) {
      case "float64": out[i] = view.getFloat64(i * 8, true); break;
      case "int16": out[i] = view.getInt16(i * 2, true); break;
      case "uint8": out[i] = view.getUint8(i); break;
      case "bool": out[i] = view.getUint8(i) ? 1 : 0; break;
      default: throw new Error(`the tensor viewer cannot decode dtype ${dtype}`);
    }
  }
  return out;
}

export function transpose(values: Float32Array, rows: number, cols: number): Float32Array {
  // values is [rows][cols]; returns [cols][rows]
  const out = new Float32Array(values.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c];
  return out;
}

export interface Picture {
  rows: number;
  cols: number;
  values: Float32Array;
  stats: codec.TensorStats;
  hist: { counts: number[]; lo: number; hi: number; below: number; above: number; nan: number; inf: number };
  image: Float32Array;
  imgRows: number;
  imgCols: number;
  decodeMs: number;
}

export const IMAGE_MAX_ROWS = 384;
export const IMAGE_MAX_COLS = 768;
export const HIST_BINS = 64;

/** Decodes a fetched slice, computes its statistics, histogram and heatmap image with the codec. */
export function picture(data: Uint8Array, dtype: string, plan: SlicePlan, sliceShape: number[]): Picture {
  const t0 = performance.now();
  let values = decodeBytes(data, dtype);
  // The slice's own shape, with the size-1 fixed dims dropped, is [a][b] in dim order.
  const kept = sliceShape.filter((_, d) => plan.slice[d] && (plan.slice[d].stop === 0));
  let rows = plan.rows;
  let cols = plan.cols;
  if (kept.length === 2) {
    rows = plan.transpose ? kept[1] : kept[0];
    cols = plan.transpose ? kept[0] : kept[1];
    if (plan.transpose) values = transpose(values, kept[0], kept[1]);
  } else if (kept.length === 1) {
    rows = 1;
    cols = kept[0];
  } else {
    rows = 1;
    cols = values.length;
  }
  if (rows * cols !== values.length) throw new Error(`slice of ${values.length} values does not match ${rows} x ${cols}`);
  const stats = codec.stats(values);
  let lo = stats.min;
  let hi = stats.max;
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) [lo, hi] = [0, 1];
  if (hi <= lo) [lo, hi] = [lo - 0.5, hi + 0.5];
  const h = codec.histogram(values, HIST_BINS, lo, hi);
  const { rows: imgRows, cols: imgCols } = codec.downsampleShape(rows, cols, IMAGE_MAX_ROWS, IMAGE_MAX_COLS);
  const image = imgRows === rows && imgCols === cols ? values : codec.downsample2d(values, rows, cols, IMAGE_MAX_ROWS, IMAGE_MAX_COLS, "mean");
  return {
    rows,
    cols,
    values,
    stats,
    hist: { counts: Array.from(h.counts), lo, hi, below: h.below, above: h.above, nan: h.nanCount, inf: h.infCount },
    image,
    imgRows,
    imgCols,
    decodeMs: performance.now() - t0,
  };
}

/**
 * `hidden`, `hidden[0, 3]`, `$2[1]` (the evaluateName of a variable) -> the tensor name and
 * the leading indices it fixes; slices (`a:b`) in the expression leave their dim free.
 */
export function parseTensorExpression(expression: string): { name: string; prefix: number[] } | undefined {
  const m = /^\s*(\$?[A-Za-z_][A-Za-z_0-9]*|\$\d+)\s*(?:\[(.*)\])?\s*$/.exec(expression);
  if (!m) return undefined;
  const prefix: number[] = [];
  if (m[2] !== undefined) {
    for (const raw of m[2].split(",")) {
      const item = raw.trim();
      if (!/^\d+$/.test(item)) break;
      prefix.push(Number(item));
    }
  }
  return { name: m[1], prefix };
}
