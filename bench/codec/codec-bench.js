#!/usr/bin/env node
/*
 * Tensor codec benchmark: the native addon against the TypeScript fallback,
 * in the same run, on the same data.
 *
 * Pipeline (what the tensor viewer does with one activation slice):
 *   decode(bfloat16 bytes) -> stats -> histogram(256 bins, [min, max])
 *   -> downsample2d(2048 x 5120 -> 1080 x 1920, mean)
 * on 2048 x 5120 = 10,485,760 bf16 elements (20 MiB), generated
 * deterministically.
 *
 * Each pipeline runs in three modes:
 *   fresh  the four calls, each allocating its output (decode: a new 40 MiB Float32Array)
 *   reuse  the four calls; decode and downsample2d write into caller-owned arrays (`out`)
 *   fused  decodeStats (decode + stats in one pass) + histogram + downsample2d, reusing arrays
 *
 * Usage (after `npm install && npm run build` in native/):
 *   node --expose-gc bench/codec/codec-bench.js [--reps N] [--ts-reps N] [--out FILE] [--no-write]
 * Writes bench/results/codec-<yyyy-mm-dd>.json unless --no-write.
 */
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');

const repoRoot = path.resolve(__dirname, '..', '..');
const codecPath = path.join(repoRoot, 'native', 'dist', 'codec.js');
if (!fs.existsSync(codecPath)) {
  console.error(`${codecPath} is missing: run \`npm install && npm run build\` in native/ first`);
  process.exit(2);
}
const codec = require(codecPath);

// ---------------------------------------------------------------------------
// options

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const REPS = Number(option('--reps', '15'));
const TS_REPS = Number(option('--ts-reps', '7'));
const WARMUP = 2;
const ROWS = 2048;
const COLS = 5120;
const N = ROWS * COLS;
const BINS = 256;
const OUT_ROWS = 1080;
const OUT_COLS = 1920;
const SEED = 20240611;
const TARGET_MS = 15;
const SETTLE_MS = 40;
const TARGET_SPEEDUP = 4;

// ---------------------------------------------------------------------------
// data: bf16 activations, roughly normal with a few large outliers

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function makeBf16(n, seed) {
  const r = mulberry32(seed);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    // sum of 4 uniforms ~ normal; every 4096th value is an outlier, as in real activations
    let v = (r() + r() + r() + r() - 2) * 1.7;
    if ((i & 4095) === 17) v *= 300;
    f[0] = v;
    const b = u[0];
    out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16; // round to nearest even
  }
  return new Uint8Array(out.buffer);
}

// ---------------------------------------------------------------------------
// measurement

const gc = typeof global.gc === 'function' ? global.gc : undefined;
const now = () => process.hrtime.bigint();
const ms = (a, b) => Number(b - a) / 1e6;

const MODES = ['fresh', 'reuse', 'fused'];

function runPipeline(impl, bytes, mode, bufs) {
  const t0 = now();
  let values;
  let s;
  let t1;
  if (mode === 'fused') {
    ({ values, stats: s } = impl.decodeStats(bytes, 'bfloat16', bufs.values));
    t1 = now();
  } else {
    values = mode === 'reuse' ? impl.decode(bytes, 'bfloat16', bufs.values) : impl.decode(bytes, 'bfloat16');
    t1 = now();
    s = impl.stats(values);
  }
  const t2 = now();
  const h = impl.histogram(values, BINS, s.min, s.max);
  const t3 = now();
  const img =
    mode !== 'fresh'
      ? impl.downsample2d(values, ROWS, COLS, OUT_ROWS, OUT_COLS, 'mean', bufs.image)
      : impl.downsample2d(values, ROWS, COLS, OUT_ROWS, OUT_COLS, 'mean');
  const t4 = now();
  return {
    times: { decode: ms(t0, t1), stats: ms(t1, t2), histogram: ms(t2, t3), downsample2d: ms(t3, t4), total: ms(t0, t4) },
    out: { values, stats: s, hist: h, image: img },
  };
}

function median(a) {
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const STEPS = ['decode', 'stats', 'histogram', 'downsample2d', 'total'];

function summarize(samples, mode) {
  const med = {};
  const min = {};
  for (const k of STEPS) {
    if (mode === 'fused' && k === 'stats') continue;
    const v = samples.map((x) => x[k]);
    med[k] = +median(v).toFixed(3);
    min[k] = +Math.min(...v).toFixed(3);
  }
  if (mode === 'fused') {
    for (const o of [med, min]) {
      o.decodeStats = o.decode;
      delete o.decode;
    }
  }
  return { medianMs: med, minMs: min, totalMsSamples: samples.map((x) => +x.total.toFixed(3)) };
}

// ---------------------------------------------------------------------------
// environment

function cpuInfo() {
  let model = os.cpus()[0]?.model ?? 'unknown';
  let flags = [];
  let family;
  let cpuModel;
  try {
    const text = fs.readFileSync('/proc/cpuinfo', 'utf8');
    model = /^model name\s*:\s*(.*)$/m.exec(text)?.[1] ?? model;
    flags = (/^flags\s*:\s*(.*)$/m.exec(text)?.[1] ?? '').split(/\s+/);
    family = /^cpu family\s*:\s*(.*)$/m.exec(text)?.[1];
    cpuModel = /^model\s*:\s*(.*)$/m.exec(text)?.[1];
  } catch {
    /* not Linux */
  }
  return {
    model,
    family,
    cpuModel,
    logicalCpus: os.cpus().length,
    avx2: flags.includes('avx2'),
    f16c: flags.includes('f16c'),
    fma: flags.includes('fma'),
  };
}

function gitCommit() {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

// CPU time of the whole machine (Linux), to tell how busy other processes kept it.
function machineCpu() {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
    return { busy: user + nice + system + irq + softirq, steal, total: f.slice(0, 8).reduce((a, b) => a + b, 0) };
  } catch {
    return undefined;
  }
}

function loadReport(before, after, ownBefore, wallMs) {
  if (!before || !after) return undefined;
  const hz = 100; // USER_HZ
  const cpus = os.cpus().length;
  const own = process.cpuUsage(ownBefore);
  const busyS = (after.busy - before.busy) / hz;
  const ownS = (own.user + own.system) / 1e6;
  const wallS = wallMs / 1000;
  return {
    wallSeconds: +wallS.toFixed(2),
    machineBusyCpus: +(busyS / wallS).toFixed(2),
    thisProcessCpus: +(ownS / wallS).toFixed(2),
    otherProcessesCpus: +(Math.max(0, busyS - ownS) / wallS).toFixed(2),
    stealCpus: +((after.steal - before.steal) / hz / wallS).toFixed(2),
    logicalCpus: cpus,
    loadavg: fs.existsSync('/proc/loadavg') ? fs.readFileSync('/proc/loadavg', 'utf8').trim() : undefined,
  };
}

function sameBits(a, b) {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

function sameValues(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!(Object.is(a[i], b[i]) || (a[i] !== a[i] && b[i] !== b[i]))) return false;
  return true;
}

function statsClose(a, b) {
  for (const k of ['min', 'max', 'absMax', 'nanCount', 'posInfCount', 'negInfCount', 'zeroCount', 'count']) {
    if (!Object.is(a[k], b[k])) return false;
  }
  for (const k of ['mean', 'std', 'l2Norm']) if (Math.abs(a[k] - b[k]) > 1e-6 * Math.max(Math.abs(b[k]), b.absMax)) return false;
  return true;
}

// ---------------------------------------------------------------------------

const sleep = (msec) => new Promise((resolve) => setTimeout(resolve, msec));

async function main() {
  const native = codec.nativeCodec();
  const info = codec.nativeInfo();
  const defaults = info ? { simd: info.simdEnabled, threads: info.threads } : undefined;

  console.log(codec.describeCodec());
  console.log(`generating ${N.toLocaleString('en')} bf16 elements (${ROWS} x ${COLS}, seed ${SEED}) ...`);
  const bytes = makeBf16(N, SEED);

  const backends = [];
  if (native) {
    backends.push({ name: 'native', label: `native ${info.kernels}, ${defaults.threads} threads`, impl: native, config: defaults });
    if (defaults.threads !== 1) {
      backends.push({ name: 'native-1t', label: `native ${info.kernels}, 1 thread`, impl: native, config: { simd: defaults.simd, threads: 1 } });
    }
    backends.push({ name: 'native-scalar', label: 'native scalar, 1 thread', impl: native, config: { simd: false, threads: 1 } });
  }
  backends.push({ name: 'typescript', label: 'TypeScript fallback', impl: codec.typescriptCodec, config: null });

  const bufs = { values: new Float32Array(N), image: new Float32Array(OUT_ROWS * OUT_COLS) };
  const samples = {};
  const reference = {};
  for (const b of backends) for (const mode of MODES) samples[`${b.name}/${mode}`] = [];

  const configure = (b) => {
    if (b.config) codec.configureNative(b.config);
  };

  // Parity on the benchmark data itself.
  const parity = {};
  const tsRun = runPipeline(codec.typescriptCodec, bytes, 'fresh', bufs).out;
  for (const b of backends) {
    if (b.name === 'typescript') continue;
    configure(b);
    const o = runPipeline(b.impl, bytes, 'fresh', bufs).out;
    parity[b.name] = {
      decodeBitExact: sameBits(o.values, tsRun.values),
      statsWithinRounding: statsClose(o.stats, tsRun.stats),
      histogramExact: JSON.stringify([...o.hist.counts, o.hist.below, o.hist.above]) === JSON.stringify([...tsRun.hist.counts, tsRun.hist.below, tsRun.hist.above]),
      downsampleExact: sameValues(o.image, tsRun.image),
    };
  }
  reference.stats = tsRun.stats;

  const cpuBefore = machineCpu();
  const ownBefore = process.cpuUsage();
  const wallBefore = now();
  // Interleave the backends rep by rep so that machine noise hits them alike.
  const maxReps = Math.max(REPS, TS_REPS);
  for (let rep = -WARMUP; rep < maxReps; rep++) {
    for (const b of backends) {
      const reps = b.name === 'typescript' ? TS_REPS : REPS;
      if (rep >= reps) continue;
      configure(b);
      for (const mode of MODES) {
        // Outside the timed region: free the previous run's arrays, then let
        // V8's background sweeping and the unmapping of those 40 MiB finish,
        // so that they do not compete with the next run for the 2 CPUs.
        if (gc) gc();
        await sleep(SETTLE_MS);
        const r = runPipeline(b.impl, bytes, mode, bufs);
        if (rep >= 0) samples[`${b.name}/${mode}`].push(r.times);
      }
    }
    process.stdout.write(rep < 0 ? 'w' : '.');
  }
  process.stdout.write('\n');
  const load = loadReport(cpuBefore, machineCpu(), ownBefore, ms(wallBefore, now()));
  if (defaults) codec.configureNative(defaults);

  const results = [];
  for (const b of backends) {
    for (const mode of MODES) {
      results.push({ backend: b.name, label: b.label, config: b.config, mode, reps: samples[`${b.name}/${mode}`].length, ...summarize(samples[`${b.name}/${mode}`], mode) });
    }
  }
  const get = (backend, mode) => results.find((r) => r.backend === backend && r.mode === mode);

  // table
  const pad = (s, n) => String(s).padEnd(n);
  const num = (x) => x.toFixed(2).padStart(9);
  console.log(`\nmedian ms over ${REPS} reps (TypeScript: ${TS_REPS}), ${N.toLocaleString('en')} bf16 elements, node ${process.version}, ${cpuInfo().model}`);
  console.log(`${pad('backend', 38)}${pad('mode', 7)}${STEPS.map((s) => s.padStart(13)).join('')}`);
  for (const r of results) {
    const cells = STEPS.map((s) =>
      r.mode === 'fused' && s === 'stats' ? '(in decode)' : num(r.mode === 'fused' && s === 'decode' ? r.medianMs.decodeStats : r.medianMs[s]),
    ).map((c) => c.padStart(13));
    console.log(`${pad(r.label, 38)}${pad(r.mode, 7)}${cells.join('')}`);
  }
  console.log('fused: the decode column is decodeStats (decode + stats in one pass)');

  const speedup = {};
  const targets = { nativeMaxMs: TARGET_MS, speedupMin: TARGET_SPEEDUP };
  if (native) {
    console.log('');
    for (const mode of MODES) {
      const n = get('native', mode).medianMs;
      const t = get('typescript', mode).medianMs;
      speedup[mode] = {};
      for (const s of Object.keys(n)) speedup[mode][s] = +(t[s] / n[s]).toFixed(2);
      targets[mode] = {
        nativeTotalMs: n.total,
        speedup: speedup[mode].total,
        underTargetMs: n.total < TARGET_MS,
        speedupMet: speedup[mode].total >= TARGET_SPEEDUP,
      };
      console.log(
        `${mode}: native ${n.total.toFixed(2)} ms vs TypeScript ${t.total.toFixed(2)} ms = ${speedup[mode].total}x ` +
          `(target: >= ${TARGET_SPEEDUP}x ${targets[mode].speedupMet ? 'met' : 'NOT met'}, < ${TARGET_MS} ms ${targets[mode].underTargetMs ? 'met' : 'NOT met'})`,
      );
    }
  }
  console.log('parity on this data:', JSON.stringify(parity));
  if (load) {
    console.log(
      `machine load during the timed runs: other processes used ${load.otherProcessesCpus} of ${load.logicalCpus} CPUs ` +
        `(steal ${load.stealCpus}); loadavg ${load.loadavg}`,
    );
  }

  const day = new Date();
  const stamp = `${day.getFullYear()}-${String(day.getMonth() + 1).padStart(2, '0')}-${String(day.getDate()).padStart(2, '0')}`;
  const report = {
    benchmark: 'tensor codec: decode + stats + histogram + downsample2d',
    date: day.toISOString(),
    command: ['node', ...process.execArgv, path.relative(process.cwd(), process.argv[1]) || process.argv[1], ...process.argv.slice(2)].join(' '),
    cwd: path.relative(repoRoot, process.cwd()) || '.',
    gitCommit: gitCommit(),
    node: process.version,
    v8: process.versions.v8,
    napi: process.versions.napi,
    platform: `${process.platform}-${process.arch}`,
    cpu: cpuInfo(),
    machineLoadDuringRuns: load,
    gcBetweenRuns: !!gc,
    settleMsBetweenRuns: SETTLE_MS,
    native: native
      ? { loaded: true, path: codec.nativeAddonPath(), kernels: info.kernels, simdUsed: info.kernels !== 'scalar', avx2Used: info.kernels.includes('avx2'), f16cUsed: info.kernels.includes('f16c'), fmaUsed: info.kernels.includes('fma'), defaultThreads: info.threads }
      : { loaded: false, reason: codec.nativeLoadError() },
    data: {
      dtype: 'bfloat16',
      rows: ROWS,
      cols: COLS,
      elements: N,
      bytes: N * 2,
      seed: SEED,
      histogram: { bins: BINS, range: '[stats.min, stats.max]' },
      downsample2d: { outRows: OUT_ROWS, outCols: OUT_COLS, mode: 'mean' },
      stats: reference.stats,
    },
    reps: { native: REPS, typescript: TS_REPS, warmup: WARMUP },
    results,
    speedupTypescriptOverNative: speedup,
    targets,
    parity,
  };
  if (!process.argv.includes('--no-write')) {
    const file = option('--out', path.join(repoRoot, 'bench', 'results', `codec-${stamp}.json`));
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
    console.log(`wrote ${path.relative(process.cwd(), file)}`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
