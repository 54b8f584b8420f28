import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DTYPES, DTYPE_SIZE } from '../api';
import { decode as tsDecode, decodeStats as tsDecodeStats, stats as tsStats } from '../fallback';
import {
  assertSameBits,
  assertStatsClose,
  randomBytes,
  LARGE,
  nativeVariants,
  randomFloats,
  SIZES,
  skipNative,
  specialFloats,
  withVariant,
} from './helpers';

const skip = skipNative();

function f32(bits: number[]): Float32Array {
  return new Float32Array(new Uint32Array(bits).buffer);
}

describe('stats: TypeScript codec against known values', () => {
  it('simple data', () => {
    const s = tsStats(new Float32Array([1, 2, 3, 4]));
    assert.deepEqual(s, {
      min: 1, max: 4, mean: 2.5, std: Math.sqrt(1.25), l2Norm: Math.sqrt(30), absMax: 4,
      nanCount: 0, posInfCount: 0, negInfCount: 0, zeroCount: 0, count: 4,
    });
  });

  it('non-finite values are counted, not used', () => {
    const s = tsStats(new Float32Array([NaN, -Infinity, 2, Infinity, -0, 0, -6, NaN, Infinity]));
    assert.equal(s.nanCount, 2);
    assert.equal(s.posInfCount, 2);
    assert.equal(s.negInfCount, 1);
    assert.equal(s.zeroCount, 2);
    assert.equal(s.count, 4);
    assert.equal(s.min, -6);
    assert.equal(s.max, 2);
    assert.equal(s.absMax, 6);
    assert.equal(s.mean, -1);
    assert.equal(s.l2Norm, Math.sqrt(40));
  });

  it('empty and all-non-finite input', () => {
    for (const v of [new Float32Array(0), new Float32Array([NaN, Infinity, -Infinity])]) {
      const s = tsStats(v);
      assert.ok(Number.isNaN(s.min) && Number.isNaN(s.max) && Number.isNaN(s.mean) && Number.isNaN(s.std));
      assert.equal(s.l2Norm, 0);
      assert.equal(s.absMax, 0);
      assert.equal(s.count, 0);
    }
  });

  it('signed zeros: min prefers -0, max prefers +0', () => {
    const s = tsStats(new Float32Array([0, -0, 0]));
    assert.ok(Object.is(s.min, -0));
    assert.ok(Object.is(s.max, 0));
    const t = tsStats(new Float32Array([-0]));
    assert.ok(Object.is(t.min, -0) && Object.is(t.max, -0));
  });

  it('large offset with small spread keeps std accurate (shifted sums)', () => {
    const v = new Float32Array(1000);
    for (let i = 0; i < v.length; i++) v[i] = 10000 + (i % 2 ? 0.5 : -0.5);
    const s = tsStats(v);
    assert.ok(Math.abs(s.std - 0.5) < 1e-12, String(s.std));
    assert.ok(Math.abs(s.mean - 10000) < 1e-9);
  });

  it('decodeStats is decode followed by stats', () => {
    const bytes = new Uint8Array(new Float32Array([3, NaN, -1, 0.5]).buffer);
    const r = tsDecodeStats(bytes, 'float32');
    assert.deepEqual(Array.from(r.values), Array.from(tsDecode(bytes, 'float32')));
    assert.deepEqual(r.stats, tsStats(r.values));
  });

  it('extreme finite values do not overflow', () => {
    const s = tsStats(f32([0x7f7fffff, 0xff7fffff, 0x00000001]));
    assert.equal(s.max, 3.4028234663852886e38);
    assert.equal(s.min, -3.4028234663852886e38);
    assert.ok(Number.isFinite(s.l2Norm) && Number.isFinite(s.std));
  });
});

describe('stats: native addon against the TypeScript codec', { skip }, () => {
  for (const v of nativeVariants()) {
    describe(v.name, () => {
      it('random data of many sizes with special values', () => {
        let seed = 100;
        for (const n of [...SIZES, LARGE]) {
          for (const rate of [0, 0.03, 0.5]) {
            const x = randomFloats(n, seed++, rate);
            const want = tsStats(x);
            withVariant(v, (c) => assertStatsClose(c.stats(x), want, `n=${n} rate=${rate}`, v.exactStats));
            // a view that does not start at the buffer's beginning
            if (n > 5) {
              const sub = x.subarray(3, n - 1);
              withVariant(v, (c) => assertStatsClose(c.stats(sub), tsStats(sub), `subarray n=${n}`, v.exactStats));
            }
          }
        }
      });

      it('special values alone, and at every position of a short vector', () => {
        const sp = specialFloats();
        withVariant(v, (c) => assertStatsClose(c.stats(sp), tsStats(sp), 'specials', v.exactStats));
        for (let len = 1; len <= 19; len++) {
          for (let k = 0; k < sp.length; k++) {
            const x = new Float32Array(len).fill(0.25);
            x[(k * 7) % len] = sp[k];
            x[len - 1] = sp[(k + 5) % sp.length];
            withVariant(v, (c) => assertStatsClose(c.stats(x), tsStats(x), `len=${len} k=${k}`, v.exactStats));
          }
        }
      });

      it('decodeStats: same values as decode, same stats as stats()', () => {
        let seed = 900;
        for (const dt of DTYPES) {
          for (const n of [0, 1, 7, 16, 17, 1023, 100003, LARGE]) {
            if (n === LARGE && dt !== 'bfloat16' && dt !== 'float16' && dt !== 'int8') continue;
            const bytes = randomBytes(n * DTYPE_SIZE[dt], seed++);
            const values = tsDecode(bytes, dt);
            const want = tsStats(values);
            for (const off of n === LARGE ? [0] : [0, 1]) {
              const view = off ? new Uint8Array(bytes.length + 1).subarray(1) : bytes;
              if (off) view.set(bytes);
              withVariant(v, (c) => {
                const got = c.decodeStats(view, dt);
                assertSameBits(got.values, values, `${dt} n=${n} off=${off} values`);
                assertStatsClose(got.stats, want, `${dt} n=${n} off=${off} stats`, v.exactStats);
                const out = new Float32Array(n + 3).subarray(2, 2 + n);
                const again = c.decodeStats(view, dt, out);
                assert.equal(again.values, out);
                assertSameBits(out, values, `${dt} n=${n} into out`);
              });
            }
          }
        }
        // bfloat16 activations with the specials mixed in, through the register-fused path
        const x = randomFloats(LARGE, 901, 0.01);
        const bits = new Uint32Array(x.buffer);
        const bf = new Uint16Array(LARGE);
        for (let i = 0; i < LARGE; i++) bf[i] = bits[i] >>> 16;
        const bytes = new Uint8Array(bf.buffer);
        const want = tsStats(tsDecode(bytes, 'bfloat16'));
        withVariant(v, (c) => assertStatsClose(c.decodeStats(bytes, 'bfloat16').stats, want, 'bf16 specials', v.exactStats));
      });

      it('empty, all-NaN, all-Inf and signed-zero inputs', () => {
        const cases = [
          new Float32Array(0),
          new Float32Array(33).fill(NaN),
          new Float32Array(17).fill(Infinity),
          new Float32Array([0, -0, 0, 0, 0, 0, 0, 0, -0, 0]),
          new Float32Array(40).fill(-0),
        ];
        for (const x of cases) withVariant(v, (c) => assertStatsClose(c.stats(x), tsStats(x), `case len ${x.length}`, true));
      });
    });
  }
});
