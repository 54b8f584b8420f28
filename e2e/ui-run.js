// A person's run of the Djinn Debugger in code-server + headless chromium, in one window, in
// parts: the tour with tiny-40l (e2e/ui-tour.js: outline, gutter breakpoint, 4 session
// threads, tensor viewer, VRAM panel, Exp 3, reload), then the real model (e2e/ui-real-model.js:
// smollm2-135m's logit lens naming words, inline values and the Outline view, View Tensor's
// Expression…, a logpoint, Continue All). DJINN_UI_PARTS="tour real-model" picks the parts.
// Screenshots go to $SHOTS (default /tmp/djinn-ui-shots); with UPDATE_DOC_SHOTS=1 the
// README's copies in docs/images/ are replaced. Prints "N passed, N failed".
const fs = require('fs'), os = require('os'), path = require('path');
const { start, copyWorkspace } = require('./cs-launch');
const { uiKit } = require('./ui-kit');
const tour = require('./ui-tour');
const realModel = require('./ui-real-model');
const EXT_DEV = path.resolve(process.env.EXT_DEV || path.join(__dirname, '..'));
const FIXTURE = path.resolve(process.env.WS || path.join(EXT_DEV, 'test/fixtures/ws'));
const WS = copyWorkspace(FIXTURE);
const THEME = process.env.THEME || 'Default Dark Modern';
const SHOTS = path.resolve(process.env.SHOTS || path.join(os.tmpdir(), 'djinn-ui-shots'));
const DOC_SHOTS = path.join(EXT_DEV, 'docs/images');
const PARTS = (process.env.DJINN_UI_PARTS || 'tour real-model').split(/\s+/).filter(Boolean);

(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  const cs = await start({ port: +(process.env.PORT || 8098), ws: WS, extDev: EXT_DEV, logFile: path.join(SHOTS, 'code-server.log'), viewport: { width: 1600, height: 1000 },
    userSettings: { 'workbench.colorTheme': process.env.THEME || 'Default Dark Modern', 'editor.minimap.enabled': false } });
  const page = cs.page;
  page.setDefaultTimeout(20000);
  const kit = uiKit(page, { shots: SHOTS, docShots: DOC_SHOTS });
  const { step, palette } = kit;
  try {
    await page.goto(cs.url);
    await step('workbench loads and the extension activates (status-bar item)', async () => {
      await page.locator('.monaco-workbench').waitFor({ timeout: 60000 });
      await page.locator('.statusbar-item', { hasText: 'Djinn' }).first().waitFor({ timeout: 60000 });
    });

    // An extension-development window ignores the configured colour theme: pick it as a person would.
    await step(`colour theme ${THEME} (the panels follow it)`, async () => {
      await palette('Preferences: Color Theme');
      const label = THEME.replace(/^Default /, '');
      await page.locator('.quick-input-list .monaco-list-row', { hasText: label }).first().waitFor();
      await page.locator('.quick-input-list .monaco-list-row', { hasText: new RegExp(`^${label}`) }).first().click();
      await page.waitForFunction((t) => document.querySelector('.monaco-workbench').className.includes(t), /Light/.test(THEME) ? ' vs ' : 'vs-dark');
    });

    const parts = { tour, 'real-model': realModel };
    for (const name of PARTS) {
      if (!parts[name]) throw new Error(`DJINN_UI_PARTS: no part '${name}' (${Object.keys(parts).join(', ')})`);
      await parts[name](page, kit, { ws: WS });
    }
  } finally {
    await cs.stop();
    fs.rmSync(WS, { recursive: true, force: true });
  }
  console.log(`screenshots: ${SHOTS}`);
  console.log(`${kit.counts.passed} passed, ${kit.counts.failed} failed`);
  process.exit(kit.counts.failed ? 1 : 0);
})().catch((e) => { console.error(e); process.exit(2); });
