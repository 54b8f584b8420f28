import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { HistogramResult } from '../api';
import { histogram as tsHistogram, stats as tsStats } from '../fallback';
import { LARGE, nativeVariants, randomFloats, SIZES, skipNative, specialFloats, withVariant } from './helpers';

const skip = skipNative();

function assertSameHistogram(got: HistogramResult, want: HistogramResult, what: string): void {
  assert.ok(got.counts instanceof Uint32Array, `${what}: counts type`);
  assert.deepEqual(
    { ...got, counts: Array.from(got.counts) },
    { ...want, counts: Array.from(want.counts) },
    what,
  );
}

describe('histogram: TypeScript codec against known values', () => {
  it('bins, edges and excluded values', () => {
    const h = tsHistogram(new Float32Array([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, -1, 5, NaN, Infinity, -Infinity]), 4, 0, 4);
    assert.deepEqual(Array.from(h.counts), [2, 2, 2, 3]); // 4 == hi goes to the last bin
    assert.equal(h.below, 1);
    assert.equal(h.above, 1);
    assert.equal(h.nanCount, 1);
    assert.equal(h.infCount, 2);
  });

  it('range bounds that are not float32 values', () => {
    // compared as doubles: fround(0.1) > 0.1 is inside, the float below it is below;
    // fround(0.3) > 0.3 is above, the float below it is inside (last bin)
    const step = (x: number, d: number) =>
      new Float32Array(new Int32Array([new Int32Array(new Float32Array([x]).buffer)[0] + d]).buffer)[0];
    assert.ok(Math.fround(0.1) > 0.1 && step(0.1, -1) < 0.1 && Math.fround(0.3) > 0.3 && step(0.3, -1) < 0.3);
    const h = tsHistogram(new Float32Array([step(0.1, -1), 0.1, 0.3, step(0.3, -1)]), 2, 0.1, 0.3);
    assert.deepEqual(Array.from(h.counts), [1, 1]);
    assert.equal(h.below, 1);
    assert.equal(h.above, 1);
  });
});

describe('histogram: native addon exact against the TypeScript codec', { skip }, () => {
  for (const v of nativeVariants()) {
    describe(v.name, () => {
      it('random data, many sizes, bins and ranges', () => {
        let seed = 200;
        for (const n of [...SIZES, LARGE]) {
          const x = randomFloats(n, seed++, 0.05);
          const s = tsStats(x);
          const lo0 = Number.isFinite(s.min) ? s.min : -1;
          const hi0 = Number.isFinite(s.max) && s.max > lo0 ? s.max : lo0 + 1;
          const ranges: [number, number][] = [
            [lo0, hi0],
            [lo0 + (hi0 - lo0) * 0.25, hi0 - (hi0 - lo0) * 0.3],
            [-0.1, 0.1],
            [-1e300, 1e300 / 3],
            [0, 1e-40],
            [-3.4e38, 3.4e38],
          ];
          for (const [lo, hi] of ranges) {
            for (const bins of [1, 2, 7, 64, 256, 1000, 70000]) {
              if (n === LARGE && bins !== 256) continue;
              const want = tsHistogram(x, bins, lo, hi);
              withVariant(v, (c) => assertSameHistogram(c.histogram(x, bins, lo, hi), want, `n=${n} bins=${bins} [${lo}, ${hi}]`));
            }
          }
        }
      });

      it('values next to the range bounds', () => {
        const bounds: [number, number][] = [[0.1, 0.3], [-1, 1], [1 / 3, 2 / 3], [-1e-39, 1e-39], [5, 5 + 2 ** -20]];
        for (const [lo, hi] of bounds) {
          const around: number[] = [];
          for (const b of [lo, hi, (lo + hi) / 2]) {
            const f = Math.fround(b);
            const u = new Float32Array([f]);
            const bits = new Int32Array(u.buffer);
            for (let d = -3; d <= 3; d++) {
              bits[0] = new Int32Array(new Float32Array([f]).buffer)[0] + d;
              around.push(u[0]);
            }
          }
          const x = new Float32Array([...around, ...around.reverse(), ...specialFloats()]);
          for (const bins of [1, 3, 10, 4096]) {
            const want = tsHistogram(x, bins, lo, hi);
            withVariant(v, (c) => assertSameHistogram(c.histogram(x, bins, lo, hi), want, `[${lo}, ${hi}] bins=${bins}`));
          }
        }
      });

      it('only non-finite values, and empty input', () => {
        for (const x of [new Float32Array(0), new Float32Array(25).fill(NaN), specialFloats()]) {
          withVariant(v, (c) => assertSameHistogram(c.histogram(x, 5, -1, 1), tsHistogram(x, 5, -1, 1), `len ${x.length}`));
        }
      });
    });
  }
});
