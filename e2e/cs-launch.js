// A throw-away code-server 4.100.3 plus headless chromium (playwright-core), following
// ../../shared/TESTING-VSCODE.md: fresh user data, settings, extensions and profile in a
// temporary folder; the whole process group is killed on stop().
const { chromium } = require('playwright-core');
const { spawn } = require('child_process');
const fs = require('fs'), os = require('os'), path = require('path'), http = require('http');
const CS_ENTRY = path.join(path.dirname(require.resolve('code-server/package.json')), 'out/node/entry.js');
const CHROME_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** Copies the fixture workspace to a temporary folder (tests write results into it). */
function copyWorkspace(src) {
  const dst = fs.mkdtempSync(path.join(os.tmpdir(), 'djinn-ws-'));
  fs.cpSync(src, dst, { recursive: true });
  return dst;
}

async function start({ port = 8099, ws, extDev, extTests, extensionsDir, logFile, viewport = { width: 1400, height: 900 }, userSettings = {} }) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cs-'));
  const mk = (d) => { fs.mkdirSync(path.join(tmp, d), { recursive: true }); return path.join(tmp, d); };
  mk('ud/User');
  fs.writeFileSync(path.join(tmp, 'ud/User/settings.json'), JSON.stringify({
    'workbench.startupEditor': 'none', 'security.workspace.trust.enabled': false, 'telemetry.telemetryLevel': 'off',
    'extensions.autoCheckUpdates': false, 'extensions.autoUpdate': false, 'update.mode': 'none',
    'workbench.enableExperiments': false, 'extensions.ignoreRecommendations': true,
    'workbench.tips.enabled': false, 'window.commandCenter': false, 'chat.commandCenter.enabled': false,
    'workbench.secondarySideBar.defaultVisibility': 'hidden', 'git.enabled': false, ...userSettings }));
  fs.writeFileSync(path.join(tmp, 'config.yaml'), `bind-addr: 127.0.0.1:${port}\nauth: none\ncert: false\n`);
  const cs = spawn(process.execPath, [CS_ENTRY, '--config', path.join(tmp, 'config.yaml'), '--user-data-dir', path.join(tmp, 'ud'),
    '--extensions-dir', extensionsDir || path.join(tmp, 'exts'), '--disable-telemetry', '--disable-update-check', '--disable-workspace-trust',
    '--disable-getting-started-override', '--ignore-last-opened', ws], { detached: true, stdio: ['ignore', 'pipe', 'pipe'],
    // keeps /tmp/vscode-ipc-*.sock, ~/.local/share/code-server, ~/.config/code-server out of shared places
    env: { ...process.env, TMPDIR: mk('tmp'), XDG_DATA_HOME: mk('data'), XDG_CONFIG_HOME: mk('config') } });
  if (logFile) { const s = fs.createWriteStream(logFile); cs.stdout.pipe(s); cs.stderr.pipe(s); } else { cs.stdout.resume(); cs.stderr.resume(); }
  const healthy = () => new Promise((res) => http.get(`http://127.0.0.1:${port}/healthz`, (r) => { r.resume(); res(r.statusCode === 200); }).on('error', () => res(false)));
  let ctx, udd;
  const stop = async () => {
    if (ctx) await ctx.close().catch(() => {});
    if (udd) fs.rmSync(udd, { recursive: true, force: true });
    // the whole process group: server, extension hosts (and the Djinn servers they started), file watcher
    for (const sig of ['SIGTERM', 'SIGKILL']) { try { process.kill(-cs.pid, sig); } catch (e) { } await new Promise(r => setTimeout(r, 500)); }
    fs.rmSync(tmp, { recursive: true, force: true });
  };
  for (let i = 0; !(await healthy()); i++) { if (i > 300) { await stop(); throw new Error('code-server did not start'); } await new Promise(r => setTimeout(r, 100)); }
  udd = fs.mkdtempSync(path.join(os.tmpdir(), 'pw-chromium-'));
  ctx = await chromium.launchPersistentContext(udd, { executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, viewport, colorScheme: process.env.COLOR_SCHEME || 'dark', args: CHROME_ARGS,
    env: { ...process.env, XDG_CONFIG_HOME: mk('chromium-config') } });
  const page = ctx.pages()[0] || await ctx.newPage();
  const remote = (p) => `vscode-remote://127.0.0.1:${port}${path.resolve(p)}`;
  const payload = [];
  if (extDev) payload.push(['extensionDevelopmentPath', remote(extDev)]);
  if (extTests) payload.push(['extensionTestsPath', remote(extTests)]);
  const url = `http://127.0.0.1:${port}/?folder=${encodeURIComponent(path.resolve(ws))}` + (payload.length ? `&payload=${encodeURIComponent(JSON.stringify(payload))}` : '');
  return { page, url, stop, pid: cs.pid };
}
module.exports = { start, copyWorkspace };
