// The helpers of the UI run (e2e/ui-run.js and its parts): named steps that count and take a
// screenshot when they fail, the command palette, webview frames, the editor's gutter. Every
// helper waits for its elements and retries what the workbench now and then swallows.
const fs = require('fs'), path = require('path');

const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * @param page the playwright page of the workbench
 * @param shots where screenshots go; docShots: docs/images (copied there with UPDATE_DOC_SHOTS=1)
 */
function uiKit(page, { shots, docShots }) {
  const t0 = Date.now();
  const counts = { passed: 0, failed: 0 };
  const secs = () => ((Date.now() - t0) / 1000).toFixed(1);

  async function shot(name, docName) {
    const file = path.join(shots, `${name}.png`);
    await page.screenshot({ path: file }).catch(() => {});
    if (docName && process.env.UPDATE_DOC_SHOTS === '1' && fs.existsSync(file)) fs.copyFileSync(file, path.join(docShots, `${docName}.png`));
  }

  async function step(name, fn) {
    try { await fn(); counts.passed++; console.log(`ok   ${name} (${secs()} s)`); }
    catch (e) { counts.failed++; console.log(`FAIL ${name}: ${e.message.split('\n')[0]}`); await shot(`fail-${counts.passed + counts.failed}`); }
  }

  async function palette(text, timeout) {
    const input = page.locator('.quick-input-widget input');
    // The row whose label starts with the text ("Preferences: Color Theme", not "...Browse Color Themes...").
    const row = page.locator('.quick-input-list .monaco-list-row', { hasText: new RegExp('^' + escapeRe(text)) }).first();
    // F1 now and then is swallowed while the workbench settles: press it again until the box shows.
    // A webview that just took focus can leave the box visible but not typable, or the list not
    // clickable: retry the fill and the click too, from a fresh palette.
    for (let i = 0; ; i++) {
      await page.keyboard.press('Escape');
      await page.keyboard.press('F1');
      try {
        await input.waitFor({ state: 'visible', timeout: 3000 });
        await input.fill('>' + text, { timeout: 5000 });
        await row.waitFor({ timeout });
        await row.click({ timeout: 5000 });
        return;
      } catch (e) { if (i >= 5) throw e; }
    }
  }

  /** Runs a palette command if it exists (layout helpers for the screenshots); never fails. */
  async function tryPalette(text) {
    await palette(text, 3000).catch(async () => { await page.keyboard.press('Escape'); });
  }
  const closePanel = () => tryPalette('View: Hide Panel');

  /** The inner frame of the webview whose #app has data-view=view (or whose title matches). */
  async function webviewFrame(match, timeout = 30000) {
    const end = Date.now() + timeout;
    while (Date.now() < end) {
      for (const f of page.frames()) {
        try {
          const ok = await f.evaluate((m) => {
            const app = document.querySelector('#app');
            return (app && app.dataset.view === m) || document.title.startsWith(m);
          }, match);
          if (ok) return f;
        } catch (e) { }
      }
      await page.waitForTimeout(250);
    }
    throw new Error(`no webview '${match}'`);
  }

  async function waitInFrame(frame, fn, arg, timeout = 30000, what = 'condition') {
    const end = Date.now() + timeout;
    while (Date.now() < end) {
      if (await frame.evaluate(fn, arg).catch(() => false)) return;
      await page.waitForTimeout(200);
    }
    throw new Error(`timed out waiting for ${what}`);
  }

  /** Moves the cursor of the active editor to a line (Go to Line) and answers the point of its gutter's breakpoint column. */
  async function gutterPoint(line) {
    await page.keyboard.press('Control+G');
    await page.keyboard.type(String(line));
    await page.keyboard.press('Enter');
    // in the editor area: a panel's editor (Output, Debug Console) may have a line `line` too, hidden
    const ln = page.locator('.part.editor .monaco-editor .margin-view-overlays .line-numbers', { hasText: new RegExp(`^${line}$`) }).first();
    // the editor renders only the lines on screen and re-renders while it scrolls to the line:
    // the element found first may be detached already, so wait until both boxes are there
    let lb = null, margin = null;
    for (const end = Date.now() + 10000; !(lb && margin); await page.waitForTimeout(100)) {
      if (Date.now() > end) throw new Error(`line ${line} or the margin has no box`);
      await ln.waitFor();
      lb = await ln.boundingBox();
      margin = await page.locator('.part.editor .monaco-editor .margin').first().boundingBox();
    }
    return { x: margin.x + 9, y: lb.y + lb.height / 2 };
  }

  /** Polls fn() until it answers something truthy, and answers that; a throw counts as not yet. */
  async function until(fn, timeout, what) {
    const end = Date.now() + timeout;
    let error = '';
    for (;;) {
      const v = await fn().catch((e) => { error = ` (last: ${e.message.split('\n')[0]})`; return false; });
      if (v) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}${error}`);
      await page.waitForTimeout(250);
    }
  }

  /** Drags the side bar's edge to make it `width` pixels wide (when it is narrower). */
  async function widenSideBar(width) {
    const sb = await page.locator('.part.sidebar').boundingBox();
    if (!sb || sb.width >= width) return;
    await page.mouse.move(sb.x + sb.width + 1, sb.y + 200);
    await page.mouse.down();
    await page.mouse.move(sb.x + width, sb.y + 200, { steps: 8 });
    await page.mouse.up();
    await page.mouse.move(700, 5);
  }

  return { widenSideBar, counts, secs, shot, step, palette, tryPalette, closePanel, webviewFrame, waitInFrame, gutterPoint, until, escapeRe };
}

module.exports = { uiKit };
