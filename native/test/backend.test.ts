import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import * as codec from '../codec';
import { skipNative } from './helpers';

const codecJs = path.join(__dirname, '..', 'codec.js');

/** Loads the compiled codec in a fresh process and reports what it chose. */
function probe(env: Record<string, string>): { backend: string; why: string; line: string; sum: number } {
  const script = `
    const c = require(${JSON.stringify(codecJs)});
    const v = c.decode(new Uint8Array([0x80, 0x3f, 0x00, 0x40]), 'bfloat16');
    process.stdout.write(JSON.stringify({ backend: c.codecBackend, why: c.nativeLoadError(), line: c.describeCodec(), sum: v[0] + v[1] }));
  `;
  const out = execFileSync(process.execPath, ['-e', script], {
    env: { ...process.env, DJINN_CODEC_FORCE_FALLBACK: '', DJINN_CODEC_ADDON: '', ...env },
    encoding: 'utf8',
  });
  return JSON.parse(out);
}

describe('backend selection', () => {
  it('DJINN_CODEC_FORCE_FALLBACK=1 selects the TypeScript codec and says why', () => {
    const r = probe({ DJINN_CODEC_FORCE_FALLBACK: '1' });
    assert.equal(r.backend, 'typescript');
    assert.match(r.why, /DJINN_CODEC_FORCE_FALLBACK=1/);
    assert.match(r.line, /^tensor codec: TypeScript fallback \(disabled by DJINN_CODEC_FORCE_FALLBACK=1\)$/);
    assert.equal(r.sum, 3);
  });

  it('a missing addon file selects the TypeScript codec', () => {
    const before = codec.codecBackend;
    try {
      assert.equal(codec.loadNativeCodec('/nonexistent/djinn_codec.node'), 'typescript');
      assert.equal(codec.codecBackend, 'typescript');
      assert.match(codec.nativeLoadError(), /not found/);
      assert.equal(codec.nativeCodec(), undefined);
      assert.deepEqual(Array.from(codec.decode(new Uint8Array([0x80, 0x3f]), 'bfloat16')), [1]);
      assert.equal(codec.stats(new Float32Array([1, 3])).mean, 2);
    } finally {
      codec.loadNativeCodec();
    }
    assert.equal(codec.codecBackend, before);
  });

  it('a file that is not an addon selects the TypeScript codec and reports the error', () => {
    try {
      assert.equal(codec.loadNativeCodec(__filename), 'typescript');
      assert.match(codec.nativeLoadError(), /addon failed to load|lacks/);
    } finally {
      codec.loadNativeCodec();
    }
  });

  it('by default the built addon is used', { skip: skipNative() }, () => {
    const r = probe({});
    assert.equal(r.backend, 'native');
    assert.equal(r.why, '');
    assert.match(r.line, /^tensor codec: native addon \((avx2\+f16c\+fma|scalar) kernels, up to \d+ threads?\) from .*djinn_codec\.node$/);
    assert.equal(r.sum, 3);
    assert.equal(codec.codecBackend, 'native');
    assert.ok(codec.nativeAddonPath()?.endsWith('djinn_codec.node'));
  });

  it('DJINN_CODEC_NO_SIMD=1 and DJINN_CODEC_THREADS are honoured by the addon', { skip: skipNative() }, () => {
    const script = `const c = require(${JSON.stringify(codecJs)}); process.stdout.write(JSON.stringify(c.nativeInfo()));`;
    const out = execFileSync(process.execPath, ['-e', script], {
      env: { ...process.env, DJINN_CODEC_NO_SIMD: '1', DJINN_CODEC_THREADS: '3' },
      encoding: 'utf8',
    });
    const info = JSON.parse(out);
    assert.equal(info.kernels, 'scalar');
    assert.equal(info.threads, 3);
  });

  it('routes calls to the selected backend with identical results', () => {
    const x = new Float32Array([1, -2, NaN, 4, 0.5, Infinity]);
    assert.deepEqual(codec.stats(x), codec.typescriptCodec.stats(x));
    assert.deepEqual(codec.histogram(x, 3, -2, 4), codec.typescriptCodec.histogram(x, 3, -2, 4));
    assert.deepEqual(codec.downsample2d(x, 2, 3, 1, 2, 'max'), codec.typescriptCodec.downsample2d(x, 2, 3, 1, 2, 'max'));
  });
});
