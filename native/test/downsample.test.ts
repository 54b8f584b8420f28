import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { downsampleShape } from '../api';
import { blockStarts, downsample2d as tsDown } from '../fallback';
import { assertSameBits, assertSameValues, nativeVariants, randomFloats, rng, skipNative, specialFloats, withVariant } from './helpers';

const skip = skipNative();

describe('downsample2d: TypeScript codec against known values', () => {
  const x = new Float32Array([
    1, 2, 3, 4,
    5, 6, 7, 8,
    9, 10, 11, 12,
  ]); // 3 x 4

  it('mean and max of blocks', () => {
    assert.deepEqual(Array.from(tsDown(x, 3, 4, 1, 2, 'mean')), [5.5, 7.5]);
    assert.deepEqual(Array.from(tsDown(x, 3, 4, 1, 2, 'max')), [10, 12]);
    // rows: 3 -> 2 blocks [0,1) and [1,3)
    assert.deepEqual(Array.from(tsDown(x, 3, 4, 2, 1, 'mean')), [2.5, 8.5]);
  });

  it('keeps a dimension whose target is not smaller', () => {
    assert.deepEqual(downsampleShape(3, 4, 10, 2), { rows: 3, cols: 2 });
    assert.deepEqual(Array.from(tsDown(x, 3, 4, 10, 10, 'mean')), Array.from(x));
    assert.deepEqual(Array.from(tsDown(x, 3, 4, 3, 2, 'max')), [2, 4, 6, 8, 10, 12]);
  });

  it('skips NaN; a block of only NaN gives NaN; Inf propagates', () => {
    const y = new Float32Array([2, NaN, NaN, NaN, Infinity, 1, NaN, 4, NaN, NaN, -Infinity, 1]); // 2 x 6
    const mean = tsDown(y, 2, 6, 1, 3, 'mean');
    assert.equal(mean[0], 3);
    assert.ok(Number.isNaN(mean[1]));
    assert.ok(Number.isNaN(mean[2])); // +Inf + -Inf
    const max = tsDown(y, 2, 6, 1, 3, 'max');
    assert.equal(max[0], 4);
    assert.ok(Number.isNaN(max[1]));
    assert.equal(max[2], Infinity);
    assert.equal(tsDown(new Float32Array([Infinity, 1]), 1, 2, 1, 1, 'mean')[0], Infinity);
  });

  it('signed zeros: max prefers +0', () => {
    assert.ok(Object.is(tsDown(new Float32Array([-0, 0, -0]), 1, 3, 1, 1, 'max')[0], 0));
    assert.ok(Object.is(tsDown(new Float32Array([-0, -0]), 1, 2, 1, 1, 'max')[0], -0));
  });

  it('empty shapes', () => {
    assert.equal(tsDown(new Float32Array(0), 0, 5, 3, 3, 'mean').length, 0);
    assert.equal(tsDown(new Float32Array(0), 4, 0, 3, 3, 'max').length, 0);
  });

  it('block starts are exact', () => {
    assert.deepEqual(Array.from(blockStarts(10, 3)), [0, 3, 6, 10]);
    assert.deepEqual(Array.from(blockStarts(5, 5)), [0, 1, 2, 3, 4, 5]);
    const total = 2 ** 40 + 5;
    const s = blockStarts(total, 7);
    for (let j = 0; j <= 7; j++) assert.equal(s[j], Number((BigInt(j) * BigInt(total)) / 7n));
  });
});

describe('downsample2d: native addon exact against the TypeScript codec', { skip }, () => {
  const shapes: [number, number, number, number][] = [
    [1, 1, 1, 1], [1, 17, 1, 5], [17, 1, 4, 1], [3, 4, 2, 3], [7, 9, 7, 9], [7, 9, 100, 100],
    [16, 16, 8, 8], [15, 33, 4, 7], [64, 100, 13, 31], [100, 64, 1, 1], [257, 1023, 37, 255],
    [1000, 1200, 333, 1199], [1024, 1040, 1024, 1040], [2048, 520, 1080, 192],
  ];
  for (const v of nativeVariants()) {
    describe(v.name, () => {
      it('random data with NaN/Inf, many shapes, mean and max', () => {
        let seed = 300;
        for (const [rows, cols, outRows, outCols] of shapes) {
          for (const rate of [0, 0.1]) {
            const x = randomFloats(rows * cols, seed++, rate);
            for (const mode of ['mean', 'max'] as const) {
              const want = tsDown(x, rows, cols, outRows, outCols, mode);
              withVariant(v, (c) => {
                const got = c.downsample2d(x, rows, cols, outRows, outCols, mode);
                const what = `${rows}x${cols} -> ${outRows}x${outCols} ${mode} rate=${rate}`;
                if (mode === 'max') assertSameBits(got, want, what);
                else assertSameValues(got, want, what);
              });
            }
          }
        }
      });

      it('blocks of only NaN, only specials, and a subarray input', () => {
        const r = rng(5);
        const sp = specialFloats();
        const x = new Float32Array(40 * 24);
        for (let i = 0; i < x.length; i++) x[i] = r() < 0.7 ? NaN : sp[(r() * sp.length) | 0];
        for (const mode of ['mean', 'max'] as const) {
          for (const [o1, o2] of [[10, 6], [40, 24], [1, 1], [39, 23]]) {
            withVariant(v, (c) =>
              assertSameValues(c.downsample2d(x, 40, 24, o1, o2, mode), tsDown(x, 40, 24, o1, o2, mode), `${mode} ${o1}x${o2}`),
            );
          }
        }
        const big = randomFloats(5 * 7 + 3, 9, 0.2);
        const sub = big.subarray(3);
        withVariant(v, (c) => assertSameValues(c.downsample2d(sub, 5, 7, 2, 3, 'mean'), tsDown(sub, 5, 7, 2, 3, 'mean'), 'sub'));
      });

      it('writes into a caller-owned out array', () => {
        const x = randomFloats(64 * 100, 11, 0.05);
        for (const mode of ['mean', 'max'] as const) {
          const want = tsDown(x, 64, 100, 13, 31, mode);
          const backing = new Float32Array(13 * 31 + 2).fill(7);
          const out = backing.subarray(1, 1 + 13 * 31);
          withVariant(v, (c) => {
            assert.equal(c.downsample2d(x, 64, 100, 13, 31, mode, out), out);
            assertSameValues(out, want, `${mode} into out`);
            assert.equal(backing[0], 7);
            assert.equal(backing[backing.length - 1], 7);
          });
          const tsOut = new Float32Array(13 * 31 + 1).subarray(1);
          assertSameValues(tsDown(x, 64, 100, 13, 31, mode, tsOut), want, `${mode} into out (TypeScript)`);
        }
      });

      it('empty shapes', () => {
        withVariant(v, (c) => {
          assert.equal(c.downsample2d(new Float32Array(0), 0, 5, 3, 3, 'mean').length, 0);
          assert.equal(c.downsample2d(new Float32Array(0), 4, 0, 3, 3, 'max').length, 0);
        });
      });
    });
  }
});
