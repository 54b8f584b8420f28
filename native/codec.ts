/**
 * Tensor codec: the public entry point.
 *
 * Uses the N-API addon build/Release/djinn_codec.node when it loads, and the
 * pure TypeScript codec (./fallback) otherwise. Both have the same API and
 * the same results; the addon is only faster. Which one is in use:
 * `codecBackend`, and `describeCodec()` gives a line for the extension's log.
 *
 * Environment:
 *   DJINN_CODEC_FORCE_FALLBACK=1   never load the addon
 *   DJINN_CODEC_ADDON=<path>       try this .node file first
 *   DJINN_CODEC_NO_SIMD=1          addon: scalar kernels only
 *   DJINN_CODEC_THREADS=<n>        addon: threads for large inputs (default: CPUs, at most 8)
 *
 * Bundling: keep the `require(path)` below dynamic and mark `*.node` external
 * (esbuild --external:*.node); ship native/build/Release/djinn_codec.node.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { DownsampleMode, DType, HistogramResult, TensorCodec, TensorStats } from './api';
import * as fallback from './fallback';

export type { DownsampleMode, DType, HistogramResult, TensorCodec, TensorStats } from './api';
export { DTYPES, DTYPE_SIZE, downsampleShape } from './api';

export type CodecBackend = 'native' | 'typescript';

export interface NativeCodecInfo {
  /** Kernel set in use: 'avx2+f16c+fma' or 'scalar'. */
  kernels: string;
  cpuAvx2: boolean;
  cpuF16c: boolean;
  cpuFma: boolean;
  avx2Compiled: boolean;
  simdEnabled: boolean;
  threads: number;
  napiVersion: number;
}

interface NativeAddon extends TensorCodec {
  info(): NativeCodecInfo;
  configure(options: { simd?: boolean; threads?: number }): NativeCodecInfo;
}

const ADDON_FILE = 'djinn_codec.node';

/** Where the addon is looked for, in order (source tree, dist/, or a bundle next to native/). */
export function addonCandidates(): string[] {
  const rel = path.join('build', 'Release', ADDON_FILE);
  const list = [
    process.env.DJINN_CODEC_ADDON,
    path.join(__dirname, rel), // native/codec.ts run in place
    path.join(__dirname, '..', rel), // native/dist/codec.js
    path.join(__dirname, 'native', rel), // bundle at the extension root
    path.join(__dirname, '..', 'native', rel), // bundle in out/ or dist/
    path.join(__dirname, '..', '..', 'native', rel),
  ].filter((p): p is string => !!p);
  return [...new Set(list.map((p) => path.resolve(p)))];
}

let addon: NativeAddon | undefined;
let addonFile: string | undefined;
let whyNot = '';

/** 'native' when the addon is in use, 'typescript' when the fallback is. */
export let codecBackend: CodecBackend = 'typescript';

function errorText(e: unknown): string {
  return e instanceof Error ? e.message.split('\n')[0] : String(e);
}

// A loaded binary must also work: a tiny round trip against the fallback.
function selfTest(a: NativeAddon): void {
  const bytes = new Uint8Array([0x80, 0x3f, 0x00, 0xc0, 0x01, 0x7f]); // bf16 1, -2 and a signalling NaN
  const got = new Uint32Array(a.decode(bytes, 'bfloat16').buffer);
  const want = new Uint32Array(fallback.decode(bytes, 'bfloat16').buffer);
  if (got.length !== 3 || got.some((v, i) => v !== want[i])) throw new Error('addon self-test failed (decode)');
  const s = a.stats(new Float32Array([1, 2, NaN]));
  if (s.count !== 2 || s.mean !== 1.5 || s.nanCount !== 1) throw new Error('addon self-test failed (stats)');
}

/**
 * (Re)selects the backend. With a path, tries only that file (e.g. the
 * extension's context.asAbsolutePath('native/build/Release/djinn_codec.node')).
 * Returns the backend in use afterwards.
 */
export function loadNativeCodec(file?: string): CodecBackend {
  addon = undefined;
  addonFile = undefined;
  codecBackend = 'typescript';
  if (process.env.DJINN_CODEC_FORCE_FALLBACK === '1') {
    whyNot = 'disabled by DJINN_CODEC_FORCE_FALLBACK=1';
    return codecBackend;
  }
  const candidates = file ? [path.resolve(file)] : addonCandidates();
  const failures: string[] = [];
  for (const p of candidates) {
    if (!fs.existsSync(p)) continue;
    try {
      // Dynamic on purpose: bundlers must leave the .node file alone.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const a = require(p) as NativeAddon;
      for (const fn of ['decode', 'decodeStats', 'stats', 'histogram', 'downsample2d', 'info', 'configure'] as const) {
        if (typeof a[fn] !== 'function') throw new Error(`addon lacks ${fn}() (stale build?)`);
      }
      selfTest(a);
      addon = a;
      addonFile = p;
      codecBackend = 'native';
      whyNot = '';
      return codecBackend;
    } catch (e) {
      failures.push(`${p}: ${errorText(e)}`);
    }
  }
  whyNot = failures.length
    ? `addon failed to load: ${failures.join('; ')}`
    : `${ADDON_FILE} not found (not built? run \`npm run build\` in native/); looked in ${candidates.join(', ')}`;
  return codecBackend;
}

loadNativeCodec();

/** Why the addon is not in use ('' when it is). */
export function nativeLoadError(): string {
  return whyNot;
}

/** Path of the loaded addon, if any. */
export function nativeAddonPath(): string | undefined {
  return addonFile;
}

/** Kernel/thread information of the loaded addon, if any. */
export function nativeInfo(): NativeCodecInfo | undefined {
  return addon?.info();
}

/** Tunes the addon (tests, benchmarks); a no-op returning undefined without it. */
export function configureNative(options: { simd?: boolean; threads?: number }): NativeCodecInfo | undefined {
  return addon?.configure(options);
}

/** The raw addon (tests, benchmarks). */
export function nativeCodec(): TensorCodec | undefined {
  return addon;
}

/** One line for the extension's log. */
export function describeCodec(): string {
  if (addon) {
    const i = addon.info();
    return `tensor codec: native addon (${i.kernels} kernels, up to ${i.threads} thread${i.threads === 1 ? '' : 's'}) from ${addonFile}`;
  }
  return `tensor codec: TypeScript fallback (${whyNot})`;
}

function impl(): TensorCodec {
  return addon ?? fallback;
}

export function decode(bytes: Uint8Array, dtype: DType, out?: Float32Array): Float32Array {
  return impl().decode(bytes, dtype, out);
}

export function decodeStats(
  bytes: Uint8Array,
  dtype: DType,
  out?: Float32Array,
): { values: Float32Array; stats: TensorStats } {
  return impl().decodeStats(bytes, dtype, out);
}

export function stats(values: Float32Array): TensorStats {
  return impl().stats(values);
}

export function histogram(values: Float32Array, bins: number, lo: number, hi: number): HistogramResult {
  return impl().histogram(values, bins, lo, hi);
}

export function downsample2d(
  values: Float32Array,
  rows: number,
  cols: number,
  outRows: number,
  outCols: number,
  mode: DownsampleMode,
  out?: Float32Array,
): Float32Array {
  return impl().downsample2d(values, rows, cols, outRows, outCols, mode, out);
}

/** The TypeScript codec, always available. */
export const typescriptCodec: TensorCodec = fallback.typescriptCodec;
