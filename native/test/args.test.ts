import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { TensorCodec } from '../api';
import { nativeCodec, typescriptCodec } from '../codec';
import { skipNative } from './helpers';

type Call = [string, (c: TensorCodec) => unknown, typeof TypeError | typeof RangeError, RegExp];

const f = new Float32Array(12);
const bad = (x: unknown) => x as never;
/** A method called with arguments missing. */
const loose = (fn: unknown) => fn as (...args: unknown[]) => unknown;

const CASES: Call[] = [
  // decode
  ['decode: bytes is a number', (c) => c.decode(bad(5), 'bfloat16'), TypeError, /^decode: bytes must be a Uint8Array$/],
  ['decode: bytes is an Int8Array', (c) => c.decode(bad(new Int8Array(4)), 'int8'), TypeError, /bytes must be a Uint8Array/],
  ['decode: bytes is Uint8ClampedArray', (c) => c.decode(bad(new Uint8ClampedArray(4)), 'int8'), TypeError, /bytes must be a Uint8Array/],
  ['decode: bytes is an ArrayBuffer', (c) => c.decode(bad(new ArrayBuffer(4)), 'int8'), TypeError, /bytes must be a Uint8Array/],
  ['decode: bytes is a plain array', (c) => c.decode(bad([1, 2]), 'int8'), TypeError, /bytes must be a Uint8Array/],
  ['decode: bytes missing', (c) => loose(c.decode).call(c), TypeError, /bytes must be a Uint8Array/],
  ['decode: dtype missing', (c) => c.decode(new Uint8Array(2), bad(undefined)), TypeError, /^decode: dtype must be a string/],
  ['decode: dtype is a number', (c) => c.decode(new Uint8Array(2), bad(2)), TypeError, /dtype must be a string/],
  ['decode: unknown dtype', (c) => c.decode(new Uint8Array(2), bad('bf16')), RangeError, /^decode: unknown dtype 'bf16'/],
  ['decode: odd length bf16', (c) => c.decode(new Uint8Array(3), 'bfloat16'), RangeError,
    /^decode: byte length 3 is not a multiple of 2 \(the size of one bfloat16 element\)$/],
  ['decode: length 6 fp32', (c) => c.decode(new Uint8Array(6), 'float32'), RangeError, /byte length 6 is not a multiple of 4/],
  ['decode: length 12 int64', (c) => c.decode(new Uint8Array(12), 'int64'), RangeError, /byte length 12 is not a multiple of 8/],
  ['decode: length 1 fp16', (c) => c.decode(new Uint8Array(1), 'float16'), RangeError, /byte length 1 is not a multiple of 2/],
  // decodeStats: the same checks, named after itself
  ['decodeStats: bytes', (c) => c.decodeStats(bad('ab'), 'int8'), TypeError, /^decodeStats: bytes must be a Uint8Array$/],
  ['decodeStats: dtype', (c) => c.decodeStats(new Uint8Array(2), bad(null)), TypeError, /^decodeStats: dtype must be a string/],
  ['decodeStats: unknown dtype', (c) => c.decodeStats(new Uint8Array(2), bad('fp8')), RangeError, /^decodeStats: unknown dtype 'fp8'/],
  ['decodeStats: odd length', (c) => c.decodeStats(new Uint8Array(5), 'float16'), RangeError, /^decodeStats: byte length 5 is not a multiple of 2/],
  ['decodeStats: out length', (c) => c.decodeStats(new Uint8Array(4), 'float16', new Float32Array(3)), RangeError, /^decodeStats: out.length = 3, expected 2$/],
  // stats
  ['stats: Float64Array', (c) => c.stats(bad(new Float64Array(3))), TypeError, /^stats: values must be a Float32Array$/],
  ['stats: array', (c) => c.stats(bad([1, 2, 3])), TypeError, /values must be a Float32Array/],
  ['stats: missing', (c) => loose(c.stats).call(c), TypeError, /values must be a Float32Array/],
  // histogram
  ['histogram: values', (c) => c.histogram(bad(new Uint8Array(4)), 4, 0, 1), TypeError, /^histogram: values must be a Float32Array$/],
  ['histogram: bins string', (c) => c.histogram(f, bad('4'), 0, 1), TypeError, /^histogram: bins must be a number$/],
  ['histogram: lo missing', (c) => loose(c.histogram).call(c, f, 4), TypeError, /^histogram: lo must be a number$/],
  ['histogram: hi bigint', (c) => c.histogram(f, 4, 0, bad(1n)), TypeError, /^histogram: hi must be a number$/],
  ['histogram: bins 0', (c) => c.histogram(f, 0, 0, 1), RangeError, /^histogram: bins must be an integer from 1 to 16777216$/],
  ['histogram: bins -3', (c) => c.histogram(f, -3, 0, 1), RangeError, /bins must be an integer/],
  ['histogram: bins 2.5', (c) => c.histogram(f, 2.5, 0, 1), RangeError, /bins must be an integer/],
  ['histogram: bins NaN', (c) => c.histogram(f, NaN, 0, 1), RangeError, /bins must be an integer/],
  ['histogram: bins too many', (c) => c.histogram(f, 2 ** 24 + 1, 0, 1), RangeError, /bins must be an integer/],
  ['histogram: lo NaN', (c) => c.histogram(f, 4, NaN, 1), RangeError, /^histogram: lo and hi must be finite$/],
  ['histogram: hi Inf', (c) => c.histogram(f, 4, 0, Infinity), RangeError, /lo and hi must be finite/],
  ['histogram: lo == hi', (c) => c.histogram(f, 4, 1, 1), RangeError, /^histogram: lo must be less than hi$/],
  ['histogram: lo > hi', (c) => c.histogram(f, 4, 2, 1), RangeError, /lo must be less than hi/],
  ['histogram: range overflows', (c) => c.histogram(f, 4, -1.7e308, 1.7e308), RangeError, /too wide or too narrow/],
  ['histogram: range too narrow', (c) => c.histogram(f, 1e6, 0, 5e-324), RangeError, /too wide or too narrow/],
  // downsample2d
  ['downsample2d: values', (c) => c.downsample2d(bad(null), 3, 4, 1, 1, 'mean'), TypeError, /^downsample2d: values must be a Float32Array$/],
  ['downsample2d: rows string', (c) => c.downsample2d(f, bad('3'), 4, 1, 1, 'mean'), TypeError, /^downsample2d: rows must be a number$/],
  ['downsample2d: outCols missing', (c) => loose(c.downsample2d).call(c, f, 3, 4, 1), TypeError, /^downsample2d: outCols must be a number$/],
  ['downsample2d: mode missing', (c) => loose(c.downsample2d).call(c, f, 3, 4, 1, 1), TypeError, /^downsample2d: mode must be the string 'mean' or 'max'$/],
  ['downsample2d: mode unknown', (c) => c.downsample2d(f, 3, 4, 1, 1, bad('min')), RangeError, /^downsample2d: mode must be 'mean' or 'max', got 'min'$/],
  ['downsample2d: rows negative', (c) => c.downsample2d(f, -3, -4, 1, 1, 'mean'), RangeError, /^downsample2d: rows and cols must be non-negative integers$/],
  ['downsample2d: cols fractional', (c) => c.downsample2d(f, 3, 4.5, 1, 1, 'mean'), RangeError, /rows and cols must be non-negative integers/],
  ['downsample2d: outRows 0', (c) => c.downsample2d(f, 3, 4, 0, 1, 'mean'), RangeError, /^downsample2d: outRows and outCols must be integers >= 1$/],
  ['downsample2d: outCols Inf', (c) => c.downsample2d(f, 3, 4, 1, Infinity, 'max'), RangeError, /outRows and outCols must be integers >= 1/],
  // the optional out argument
  ['decode: out is an array', (c) => c.decode(new Uint8Array(4), 'bfloat16', bad([0, 0])), TypeError, /^decode: out must be a Float32Array$/],
  ['decode: out is a Float64Array', (c) => c.decode(new Uint8Array(4), 'bfloat16', bad(new Float64Array(2))), TypeError, /out must be a Float32Array/],
  ['decode: out too short', (c) => c.decode(new Uint8Array(4), 'bfloat16', new Float32Array(1)), RangeError, /^decode: out.length = 1, expected 2$/],
  ['decode: out too long', (c) => c.decode(new Uint8Array(4), 'int8', new Float32Array(5)), RangeError, /^decode: out.length = 5, expected 4$/],
  ['decode: out overlaps bytes', (c) => {
    const f32 = new Float32Array(8);
    return c.decode(new Uint8Array(f32.buffer, 4, 8), 'bfloat16', f32.subarray(2, 6));
  }, RangeError, /^decode: out must not share memory with the input$/],
  ['downsample2d: out is null', (c) => c.downsample2d(f, 3, 4, 1, 2, 'mean', bad(null)), TypeError, /^downsample2d: out must be a Float32Array$/],
  ['downsample2d: out wrong length', (c) => c.downsample2d(f, 3, 4, 10, 2, 'max', new Float32Array(2)), RangeError, /^downsample2d: out.length = 2, expected 6$/],
  ['downsample2d: out is the input', (c) => c.downsample2d(f, 3, 4, 3, 4, 'max', f), RangeError, /^downsample2d: out must not share memory with the input$/],
  ['downsample2d: shape mismatch', (c) => c.downsample2d(f, 3, 5, 1, 1, 'mean'), RangeError,
    /^downsample2d: rows \* cols = 15 does not match values.length = 12$/],
];

function runCases(codec: () => TensorCodec): void {
  for (const [name, call, type, msg] of CASES) {
    it(name, () => {
      assert.throws(() => call(codec()), (e: unknown) => {
        assert.ok(e instanceof type, `expected ${type.name}, got ${e instanceof Error ? e.constructor.name : typeof e}: ${String(e)}`);
        assert.match((e as Error).message, msg);
        return true;
      });
    });
  }
}

describe('bad arguments: TypeScript codec', () => runCases(() => typescriptCodec));

describe('bad arguments: native addon', { skip: skipNative() }, () => {
  runCases(() => nativeCodec()!);
  it('gives the same messages as the TypeScript codec', () => {
    for (const [, call] of CASES) {
      const msg = (c: TensorCodec) => {
        try {
          call(c);
        } catch (e) {
          return `${(e as Error).constructor.name}: ${(e as Error).message}`;
        }
        return 'no error';
      };
      assert.equal(msg(nativeCodec()!), msg(typescriptCodec));
    }
  });
  it('configure rejects bad options', () => {
    const addon = nativeCodec() as unknown as { configure(o: unknown): unknown };
    assert.throws(() => addon.configure(5), TypeError);
    assert.throws(() => addon.configure({ threads: 0 }), RangeError);
    assert.throws(() => addon.configure({ simd: 'yes' }), TypeError);
  });
});
