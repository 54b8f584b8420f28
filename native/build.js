#!/usr/bin/env node
/*
 * Builds the djinn_codec N-API addon with node-gyp against the Node headers
 * that are already on this machine. It never downloads headers.
 *
 * A failed build is NOT an error: the extension falls back to the TypeScript
 * codec (native/fallback.ts) and only loses speed. This script therefore
 * prints a warning and exits 0 on any failure, unless it is run with
 * `--strict` (CI), where a failure exits 1.
 *
 * Environment:
 *   DJINN_CODEC_SKIP_NATIVE=1   do not build at all
 *   DJINN_CODEC_NODEDIR=<dir>   Node headers to build against (dir/include/node/node_api.h)
 *   npm_config_nodedir          same, usually from ~/.npmrc `nodedir=`
 *   npm_config_node_gyp         node-gyp to run (npm sets it for scripts)
 */
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');

const strict = process.argv.includes('--strict');
const here = __dirname;
const addonPath = path.join(here, 'build', 'Release', 'djinn_codec.node');

function log(msg) {
  process.stdout.write(`[djinn-native-codec] ${msg}\n`);
}

function giveUp(reason) {
  const msg =
    `WARNING: native tensor codec not built: ${reason}\n` +
    '  The extension still works: it uses the TypeScript codec (slower on large tensors).';
  if (strict) {
    process.stderr.write(`[djinn-native-codec] ${msg}\n`);
    process.exit(1);
  }
  process.stdout.write(`[djinn-native-codec] ${msg}\n`);
  process.exit(0);
}

function hasHeaders(dir) {
  return (
    !!dir &&
    fs.existsSync(path.join(dir, 'include', 'node', 'node_api.h')) &&
    fs.existsSync(path.join(dir, 'include', 'node', 'common.gypi'))
  );
}

/** Returns [extra node-gyp args] selecting local headers, or null when none exist. */
function localHeaderArgs() {
  const explicit = [process.env.DJINN_CODEC_NODEDIR, process.env.npm_config_nodedir].filter(Boolean);
  for (const dir of explicit) {
    if (hasHeaders(dir)) return [`--nodedir=${path.resolve(dir)}`];
    log(`ignoring nodedir ${dir}: no include/node/node_api.h there`);
  }
  // The headers that ship with this very Node (e.g. /usr/bin/node -> /usr/include/node).
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (hasHeaders(prefix)) return [`--nodedir=${prefix}`];
  // Headers node-gyp fetched on some earlier occasion: usable without a download.
  const version = process.version.replace(/^v/, '');
  const caches = [
    process.env.npm_config_devdir,
    path.join(os.homedir(), '.cache', 'node-gyp'),
    path.join(os.homedir(), '.node-gyp'),
  ].filter(Boolean);
  for (const cache of caches) {
    const dir = path.join(cache, version);
    if (hasHeaders(dir) && fs.existsSync(path.join(dir, 'installVersion'))) {
      return [`--devdir=${path.resolve(cache)}`];
    }
  }
  return null;
}

function findNodeGyp() {
  const candidates = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js', { paths: [here] }));
  } catch {
    /* not a local dependency */
  }
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  candidates.push(path.join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  candidates.push(path.join(path.dirname(process.execPath), 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  try {
    const r = spawnSync(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['root', '-g'], {
      encoding: 'utf8',
      timeout: 30000,
      shell: process.platform === 'win32',
    });
    if (r.status === 0 && r.stdout.trim()) {
      candidates.push(path.join(r.stdout.trim(), 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
    }
  } catch {
    /* no npm on PATH */
  }
  return candidates.find((c) => fs.existsSync(c)) || null;
}

function main() {
  if (process.env.DJINN_CODEC_SKIP_NATIVE === '1') {
    giveUp('DJINN_CODEC_SKIP_NATIVE=1');
  }
  try {
    require.resolve('node-addon-api', { paths: [here] });
  } catch {
    giveUp('node-addon-api is not installed (run `npm install` in native/)');
  }
  const headerArgs = localHeaderArgs();
  if (!headerArgs) {
    giveUp(
      `no local Node ${process.version} headers found (set nodedir= in .npmrc or DJINN_CODEC_NODEDIR); ` +
        'refusing to download them',
    );
  }
  const nodeGyp = findNodeGyp();
  if (!nodeGyp) giveUp('node-gyp not found (it is bundled with npm)');

  const args = [nodeGyp, 'rebuild', ...headerArgs, `--jobs=${Math.max(1, os.cpus().length)}`];
  log(`node ${args.map((a) => (a.includes(' ') ? JSON.stringify(a) : a)).join(' ')}`);
  const r = spawnSync(process.execPath, args, {
    cwd: here,
    stdio: 'inherit',
    timeout: 10 * 60 * 1000,
    env: { ...process.env, npm_config_nodedir: undefined },
  });
  if (r.error) giveUp(`could not run node-gyp: ${r.error.message}`);
  if (r.status !== 0) giveUp(`node-gyp rebuild exited with ${r.status ?? r.signal}`);
  if (!fs.existsSync(addonPath)) giveUp(`node-gyp succeeded but ${addonPath} is missing`);

  // Load it in a separate process: a broken binary must not take this one down.
  const check = spawnSync(
    process.execPath,
    ['-e', `const a=require(${JSON.stringify(addonPath)});process.stdout.write(JSON.stringify(a.info()))`],
    { encoding: 'utf8', timeout: 60000 },
  );
  if (check.status !== 0) giveUp(`built addon does not load: ${(check.stderr || '').trim().split('\n')[0]}`);
  log(`built ${path.relative(process.cwd(), addonPath) || addonPath}: ${check.stdout}`);
}

main();
