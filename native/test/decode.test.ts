import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DTYPES, DTYPE_SIZE } from '../api';
import { decode as tsDecode, halfToFloatBits } from '../fallback';
import { assertSameBits, LARGE, nativeVariants, randomBytes, SIZES, skipNative, withVariant } from './helpers';

const skip = skipNative();

/** All 65536 16-bit patterns, as little-endian bytes. */
function all16(): Uint8Array {
  const u = new Uint16Array(65536);
  for (let i = 0; i < 65536; i++) u[i] = i;
  return new Uint8Array(u.buffer);
}

/** `bytes` copied to a fresh buffer at byte offset `offset` (misaligned when odd). */
function atOffset(bytes: Uint8Array, offset: number): Uint8Array {
  const buf = new Uint8Array(bytes.length + offset + 3);
  buf.set(bytes, offset);
  return buf.subarray(offset, offset + bytes.length);
}

function f32(bits: number): number {
  return new Float32Array(new Uint32Array([bits]).buffer)[0];
}

describe('decode: TypeScript codec against known values', () => {
  it('bfloat16', () => {
    const b = new Uint8Array([0x80, 0x3f, 0x00, 0xc0, 0x80, 0x7f, 0x80, 0xff, 0x01, 0x00, 0x80, 0x00, 0x7f, 0x7f, 0xc1, 0x7f]);
    const v = tsDecode(b, 'bfloat16');
    assert.deepEqual(Array.from(v.slice(0, 4)), [1, -2, Infinity, -Infinity]);
    assert.equal(v[4], f32(0x00010000)); // bf16 subnormal
    assert.equal(v[5], 2 ** -126);
    assert.equal(v[6], f32(0x7f7f0000)); // bf16 max
    assert.equal(new Uint32Array(v.buffer)[7], 0x7fc10000); // NaN payload kept
  });

  it('float16', () => {
    const h = (x: number) => f32(halfToFloatBits(x));
    assert.equal(h(0x3c00), 1);
    assert.equal(h(0xc000), -2);
    assert.equal(h(0x7bff), 65504); // max finite
    assert.equal(h(0x0400), 2 ** -14); // min normal
    assert.equal(h(0x0001), 2 ** -24); // min subnormal
    assert.equal(h(0x03ff), 1023 * 2 ** -24); // max subnormal
    assert.ok(Object.is(h(0x8000), -0));
    assert.equal(h(0x7c00), Infinity);
    assert.equal(h(0xfc00), -Infinity);
    assert.equal(halfToFloatBits(0x7e00), 0x7fc00000); // qNaN
    assert.equal(halfToFloatBits(0x7c01), 0x7fc02000); // sNaN: payload kept, quietened (as F16C does)
    assert.equal(halfToFloatBits(0xfd55), 0xffeaa000);
    // every finite half value against the arithmetic definition
    for (let x = 0; x < 0x10000; x++) {
      const e = (x >> 10) & 31;
      if (e === 31) continue;
      const m = x & 1023;
      const s = x & 0x8000 ? -1 : 1;
      const want = e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
      assert.ok(Object.is(h(x), want), `half 0x${x.toString(16)}: ${h(x)} vs ${want}`);
    }
  });

  it('float32, int8, int32, int64', () => {
    const f = new Float32Array([1.5, -0, NaN, 3.4e38]);
    assertSameBits(tsDecode(new Uint8Array(f.buffer), 'float32'), f, 'float32');
    assert.deepEqual(Array.from(tsDecode(new Uint8Array([0, 1, 127, 128, 255]), 'int8')), [0, 1, 127, -128, -1]);
    const i32 = new Int32Array([0, -1, 2147483647, -2147483648, 16777217, 16777219]);
    assert.deepEqual(
      Array.from(tsDecode(new Uint8Array(i32.buffer), 'int32')),
      [0, -1, 2147483648, -2147483648, 16777216, 16777220],
    );
    const i64 = new BigInt64Array([0n, -1n, 9007199254740993n, -(2n ** 63n), 2n ** 63n - 1n, 123456789012n]);
    assert.deepEqual(
      Array.from(tsDecode(new Uint8Array(i64.buffer), 'int64')),
      [0, -1, Math.fround(9007199254740992), -(2 ** 63), 2 ** 63, Math.fround(123456789012)],
    );
  });

  it('accepts Buffer and misaligned views, and leaves the input alone', () => {
    const src = randomBytes(64, 7);
    for (const dt of DTYPES) {
      const want = tsDecode(src, dt);
      for (const off of [1, 2, 3, 5]) {
        const view = atOffset(src, off);
        assertSameBits(tsDecode(view, dt), want, `${dt} at offset ${off}`);
        assert.deepEqual(view, src);
      }
      assertSameBits(tsDecode(Buffer.from(src), dt), want, `${dt} from Buffer`);
    }
  });
});

describe('decode: native addon bit-exact against the TypeScript codec', { skip }, () => {
  for (const v of nativeVariants()) {
    describe(v.name, () => {
      it('every 16-bit pattern (bfloat16, float16), aligned and misaligned', () => {
        const bytes = all16();
        for (const dt of ['bfloat16', 'float16'] as const) {
          const want = tsDecode(bytes, dt);
          for (const off of [0, 1, 2, 3]) {
            withVariant(v, (c) => assertSameBits(c.decode(atOffset(bytes, off), dt), want, `${dt} offset ${off}`));
          }
        }
      });

      it('random bytes of many sizes, every dtype, offsets 0..3', () => {
        let seed = 1;
        for (const dt of DTYPES) {
          for (const n of [...SIZES, LARGE]) {
            const bytes = randomBytes(n * DTYPE_SIZE[dt], seed++);
            const want = tsDecode(bytes, dt);
            const offsets = n === LARGE ? [0, 1] : [0, 1, 2, 3];
            for (const off of offsets) {
              withVariant(v, (c) => {
                const got = c.decode(atOffset(bytes, off), dt);
                assert.ok(got instanceof Float32Array);
                assert.equal(got.byteOffset, 0);
                assertSameBits(got, want, `${dt} n=${n} offset ${off}`);
              });
            }
          }
        }
      });

      it('writes into a caller-owned out array (any offset) and returns it', () => {
        for (const dt of DTYPES) {
          const bytes = randomBytes(37 * DTYPE_SIZE[dt], 77);
          const want = tsDecode(bytes, dt);
          const backing = new Float32Array(37 + 5).fill(-1);
          const out = backing.subarray(3, 40);
          withVariant(v, (c) => {
            const got = c.decode(bytes, dt, out);
            assert.equal(got, out);
            assertSameBits(out, want, `${dt} into out`);
            assert.deepEqual(Array.from(backing.subarray(0, 3)), [-1, -1, -1]);
            assert.deepEqual(Array.from(backing.subarray(40)), [-1, -1]);
          });
          const tsOut = new Float32Array(37 + 5).subarray(1, 38);
          assertSameBits(tsDecode(bytes, dt, tsOut), want, `${dt} into out (TypeScript)`);
        }
        // a large one takes the threaded, streaming-store path
        const big = randomBytes(2 * LARGE, 78);
        const out = new Float32Array(LARGE + 1).subarray(1);
        withVariant(v, (c) => assertSameBits(c.decode(big, 'bfloat16', out), tsDecode(big, 'bfloat16'), 'large into out'));
      });

      it('extreme integers', () => {
        const i64 = new BigInt64Array([0n, -1n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 53n + 1n, 2n ** 24n + 1n, 3n * 2n ** 60n + 12345n]);
        const i32 = new Int32Array([2147483647, -2147483648, 16777217, -16777217, 33554435]);
        withVariant(v, (c) => {
          assertSameBits(c.decode(new Uint8Array(i64.buffer), 'int64'), tsDecode(new Uint8Array(i64.buffer), 'int64'), 'int64');
          assertSameBits(c.decode(new Uint8Array(i32.buffer), 'int32'), tsDecode(new Uint8Array(i32.buffer), 'int32'), 'int32');
        });
      });

      it('SharedArrayBuffer and Buffer inputs', () => {
        const sab = new Uint8Array(new SharedArrayBuffer(4099));
        sab.set(randomBytes(4099, 99));
        const view = sab.subarray(1, 4097);
        withVariant(v, (c) => {
          assertSameBits(c.decode(view, 'bfloat16'), tsDecode(view, 'bfloat16'), 'sab bf16');
          assertSameBits(c.decode(Buffer.from(view), 'float16'), tsDecode(view, 'float16'), 'buffer f16');
        });
      });
    });
  }
});
