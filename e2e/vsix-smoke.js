// The packaged extension as a person installs it: code-server --install-extension <vsix>,
// a fresh folder, "Djinn: Start Local Server" from the palette (the server's Python package
// comes from the .vsix; the Python with torch from DJINN_SMOKE_PYTHON), the status bar and
// the VRAM panel live, "Djinn: Open Model Outline" generating the outline from the server.
// Prints "N passed, N failed".
const fs = require('fs'), os = require('os'), path = require('path');
const { execFileSync } = require('child_process');
const { start } = require('./cs-launch');
const VSIX = path.resolve(process.argv[2] || process.env.VSIX || '');
const PY = process.env.DJINN_SMOKE_PYTHON || path.join(__dirname, '..', '.venv', 'bin', 'python');
const SHOTS = path.resolve(process.env.SHOTS || path.join(os.tmpdir(), 'djinn-ui-shots'));
if (!fs.existsSync(VSIX)) { console.error(`usage: node vsix-smoke.js path/to/djinn-debugger.vsix (${VSIX} not found)`); process.exit(2); }
const CS_ENTRY = path.join(path.dirname(require.resolve('code-server/package.json')), 'out/node/entry.js');

let passed = 0, failed = 0, page;
async function step(name, fn) {
  try { await fn(); passed++; console.log(`ok   ${name}`); }
  catch (e) {
    failed++; console.log(`FAIL ${name}: ${e.message.split('\n')[0]}`);
    const toasts = await page?.locator('.notification-toast').allInnerTexts().catch(() => []);
    if (toasts?.length) console.log(`     notifications: ${toasts.join(' | ').replace(/\s+/g, ' ')}`); await page?.screenshot({ path: path.join(SHOTS, 'vsix-failure.png') }).catch(() => {}); }
}
async function palette(text) {
  const input = page.locator('.quick-input-widget input');
  // F1 now and then is swallowed while the workbench settles: press it again until the box shows.
  // A webview that just took focus (the VRAM panel) can leave the box visible but not typable:
  // the fill is retried with the rest.
  for (let i = 0; ; i++) {
    await page.keyboard.press('Escape');
    await page.keyboard.press('F1');
    try {
      await input.waitFor({ state: 'visible', timeout: 3000 });
      await input.fill('>' + text, { timeout: 5000 });
      break;
    } catch (e) { if (i >= 5) throw e; }
  }
  // The row whose label starts with the text ("Preferences: Color Theme", not "...Browse Color Themes...").
  const row = page.locator('.quick-input-list .monaco-list-row', { hasText: new RegExp('^' + text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) }).first();
  await row.waitFor();
  await row.click();
}

(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  const ws = fs.mkdtempSync(path.join(os.tmpdir(), 'djinn-vsix-ws-'));
  fs.mkdirSync(path.join(ws, '.vscode'));
  fs.writeFileSync(path.join(ws, '.vscode', 'settings.json'), JSON.stringify({ 'djinn.server.pythonPath': PY, 'djinn.defaultModel': 'tiny-40l', 'djinn.server.device': 'cpu' }));
  const exts = fs.mkdtempSync(path.join(os.tmpdir(), 'djinn-vsix-exts-'));
  execFileSync(process.execPath, [CS_ENTRY, '--extensions-dir', exts, '--install-extension', VSIX], { stdio: 'ignore', env: { ...process.env, XDG_DATA_HOME: exts, XDG_CONFIG_HOME: exts } });
  const installed = fs.readdirSync(exts).find((d) => d.startsWith('djinn.djinn-debugger-'));
  const cs = await start({ port: +(process.env.PORT || 8097), ws, extensionsDir: exts, logFile: path.join(SHOTS, 'vsix-code-server.log') });
  page = cs.page;
  page.setDefaultTimeout(20000);
  try {
    await step(`the .vsix installs (${installed})`, async () => { if (!installed) throw new Error('not in the extensions folder'); });
    await page.goto(cs.url);
    await step('the installed extension activates on its command', async () => {
      await page.locator('.monaco-workbench').waitFor({ timeout: 60000 });
      await page.locator('.statusbar-item', { hasText: 'Djinn' }).first().waitFor({ timeout: 60000 }).catch(() => {});
      await page.waitForTimeout(1000);
      await palette('Djinn: Start Local Server');
      await page.waitForTimeout(3000);
      await page.screenshot({ path: path.join(SHOTS, 'vsix-start.png') });
      await page.locator('.statusbar-item', { hasText: /Djinn tiny-40l · VRAM/ }).first().waitFor({ timeout: 90000 });
    });
    await step('Djinn: Open Model Outline writes tiny-40l.djinn from the server', async () => {
      await palette('Djinn: Open Model Outline');
      await page.locator('.tab', { hasText: 'tiny-40l.djinn' }).first().waitFor();
      if (!fs.readFileSync(path.join(ws, 'tiny-40l.djinn'), 'utf8').includes('layers.39.mlp')) throw new Error('outline incomplete');
    });
    await step('the status bar opens the VRAM panel', async () => {
      await page.locator('.statusbar-item', { hasText: /Djinn tiny-40l · VRAM/ }).first().click();
      await page.locator('.tab', { hasText: 'Djinn VRAM' }).first().waitFor();
    });
    await step('Djinn: Stop Local Server', async () => {
      await palette('Djinn: Stop Local Server');
      await page.locator('.statusbar-item', { hasText: /^Djinn$/ }).first().waitFor({ timeout: 20000 }).catch(async () => {
        await page.locator('.statusbar-item', { hasText: 'Djinn' }).first().waitFor();
      });
    });
  } finally {
    await cs.stop();
    fs.rmSync(ws, { recursive: true, force: true });
    fs.rmSync(exts, { recursive: true, force: true });
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})().catch((e) => { console.error(e); process.exit(2); });
