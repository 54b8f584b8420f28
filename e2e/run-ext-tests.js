// The extension-host test suite (out/ext-test/index.js, mocha) inside code-server's Node
// extension host, against a real Djinn server on the CPU. Exit code 0 iff every test passed.
const path = require('path'), util = require('util'), fs = require('fs'), os = require('os');
const { start, copyWorkspace } = require('./cs-launch');
const EXT_DEV = path.resolve(process.env.EXT_DEV || path.join(__dirname, '..'));
const EXT_TESTS = path.resolve(process.env.EXT_TESTS || path.join(EXT_DEV, 'out/ext-test/index.js'));
const WS = copyWorkspace(path.resolve(process.env.WS || path.join(EXT_DEV, 'test/fixtures/ws')));
const RESULTS = process.env.RESULTS = path.resolve(process.env.RESULTS || path.join(os.tmpdir(), 'djinn-ext-test-results')); // the extension host inherits env
const TIMEOUT = +(process.env.TEST_TIMEOUT_MS || 420000);
(async () => {
  fs.mkdirSync(RESULTS, { recursive: true });
  fs.rmSync(path.join(RESULTS, 'results.json'), { force: true });
  const t0 = Date.now();
  const cs = await start({ port: +(process.env.PORT || 8099), ws: WS, extDev: EXT_DEV, extTests: EXT_TESTS, logFile: path.join(RESULTS, 'code-server.log') });
  const { page } = cs;
  let code;
  try {
    let resolveExit; const exited = new Promise(r => resolveExit = r);
    // the workbench calls window.codeAutomationExit(exitCode) when run() settles in the extension host
    await page.exposeFunction('codeAutomationExit', (c) => resolveExit(c));
    await page.exposeFunction('codeAutomationLog', () => {});
    // extension-host console output is forwarded to the page console as ("%c INFO", "color: …", fmt, ...args)
    page.on('console', async (m) => {
      try {
        const args = await Promise.all(m.args().map(a => a.jsonValue()));
        if (typeof args[0] === 'string' && /^%c\s*\w+\s*$/.test(args[0])) args.splice(0, 2);
        if (!args.length) return;
        const text = util.format(...args);
        const noise = /open-vsx|404|ERR_NAME_NOT_RESOLVED|vsda|service worker/i.test(text);
        if (process.env.VERBOSE || (m.type() === 'error' ? !noise : /^\s*(✔|✓|\d+\) |\d+ (passing|failing|pending)|  +\S)/.test(text))) console.log(text);
      } catch (e) { }
    });
    await page.goto(cs.url);
    code = await Promise.race([exited, new Promise(r => setTimeout(() => r('timeout'), TIMEOUT))]);
    console.log(`[harness] codeAutomationExit: ${code} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    if (code !== 0) await page.screenshot({ path: path.join(RESULTS, 'failure.png') }).catch(() => {});
  } finally {
    await cs.stop();
    fs.rmSync(WS, { recursive: true, force: true });
  }
  process.exit(code === 0 ? 0 : 1);
})().catch((e) => { console.error(e); process.exit(2); });
