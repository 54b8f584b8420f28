// The tour of the Djinn Debugger with tiny-40l, as a person would do it: open the model outline,
// click the gutter at layers.10, start debugging, see layers.10 in CALL STACK with 4 session
// threads, hover a module, expand a tensor in VARIABLES, open the tensor viewer and the VRAM
// panel (both must render data), Set Value…, Continue, run Exp 3 from the palette and read its
// report, reload the window. A part of e2e/ui-run.js (its helpers: e2e/ui-kit.js).
const fs = require('fs'), path = require('path');

const CONFIG = 'Djinn: 4 sessions of tiny-40l';
const OUTLINE = 'tiny-40l.djinn';

/** @param kit e2e/ui-kit.js's helpers; ws: the workspace folder code-server has open */
module.exports = async function tour(page, kit, { ws }) {
  const { step, shot, palette, tryPalette, closePanel, webviewFrame, waitInFrame, gutterPoint } = kit;
  const WS = ws;
  const BP_LINE = fs.readFileSync(path.join(WS, OUTLINE), 'utf8').split('\n').findIndex((l) => /^layers\.10\s/.test(l)) + 1;

  await step('the Exp 3 picker on this CPU machine pre-selects a CPU run (no exp3.yaml)', async () => {
    const yaml = path.join(WS, 'exp3.yaml');
    fs.renameSync(yaml, yaml + '.off');
    try {
      await palette('Djinn: Run Exp 3 Memory-Pressure Test');
      const active = page.locator('.quick-input-list .monaco-list-row.focused').first();
      await active.waitFor({ timeout: 15000 });
      const text = await active.innerText();
      await shot('00-exp3-picker');
      if (!/^\s*(CPU|Quick)/.test(text)) throw new Error(`pre-selected: ${JSON.stringify(text)}`);
      await page.keyboard.press('Escape');
    } finally {
      fs.renameSync(yaml + '.off', yaml);
    }
  });

  await step('Djinn: Open Model Outline opens the outline with syntax colouring', async () => {
    await palette('Djinn: Open Model Outline');
    await page.locator('.tab', { hasText: OUTLINE }).first().waitFor();
    await page.locator('.monaco-editor .view-line', { hasText: 'embed_tokens' }).first().waitFor();
  });

  await step(`a click in the gutter at layers.10 (line ${BP_LINE}) sets a breakpoint`, async () => {
    await page.locator('.monaco-editor').first().click();
    const at = await gutterPoint(BP_LINE);
    await page.mouse.move(at.x, at.y);
    await page.mouse.click(at.x, at.y);
    await page.locator('.monaco-editor .codicon-debug-breakpoint, .monaco-editor .codicon-debug-breakpoint-unverified').first().waitFor();
    await page.locator('.monaco-editor .view-line', { hasText: 'layers.10 ' }).first().waitFor();
    await shot('01-outline-breakpoint', 'vscode-outline');
  });

  await step('start debugging: CALL STACK shows layers.10 and 4 session threads', async () => {
    await palette('Debug: Select and Start Debugging');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: CONFIG }).first().waitFor();
    await page.keyboard.type(CONFIG); // not fill(): the picker's box holds a prefix
    await page.keyboard.press('Enter');
    await page.locator('.debug-toolbar').waitFor({ state: 'visible', timeout: 60000 });
    const threads = page.locator('.debug-call-stack .monaco-list-row', { hasText: /s\d+ · L10 · / });
    const end = Date.now() + 60000;
    while ((await threads.count()) < 4) { if (Date.now() > end) throw new Error(`${await threads.count()} paused session threads`); await page.waitForTimeout(250); }
    await page.locator('.debug-call-stack .monaco-list-row', { hasText: /^layers\.10 · input/ }).first().waitFor();
    // Short thread names ("s1 · L10 · host · …") read at the default width; a wider side bar shows the prompts too.
    const sb = await page.locator('.part.sidebar').boundingBox();
    if (sb) {
      await page.mouse.move(sb.x + sb.width + 1, sb.y + 200);
      await page.mouse.down();
      await page.mouse.move(sb.x + 520, sb.y + 200, { steps: 8 });
      await page.mouse.up();
    }
    await page.mouse.move(700, 5);
    await page.waitForTimeout(300);
    await shot('02-callstack', 'vscode-callstack');
  });

  await step('hovering attn in layers.10.attn shows the whole module; layers.10 in the Debug Console describes it', async () => {
    const pos = await page.evaluate(() => {
      for (const line of document.querySelectorAll('.monaco-editor .view-line')) {
        const i = line.textContent.indexOf('layers.10.attn');
        if (i < 0) continue;
        const target = i + 'layers.10.at'.length; // inside "attn"
        const walker = document.createTreeWalker(line, NodeFilter.SHOW_TEXT);
        let n, acc = 0;
        while ((n = walker.nextNode())) {
          if (acc + n.length > target) {
            const r = document.createRange();
            r.setStart(n, target - acc);
            r.setEnd(n, target - acc + 1);
            const b = r.getBoundingClientRect();
            return { x: b.x + b.width / 2, y: b.y + b.height / 2 };
          }
          acc += n.length;
        }
      }
      return null;
    });
    if (!pos) throw new Error('layers.10.attn is not on screen');
    await page.mouse.move(pos.x - 30, pos.y);
    await page.mouse.move(pos.x, pos.y, { steps: 4 });
    await page.locator('.monaco-hover, .debug-hover-widget', { hasText: /layers\.10\.attn · attention/ }).first().waitFor({ timeout: 15000 });
    await shot('02b-hover-module');
    await page.mouse.move(5, 450);
    await tryPalette('Debug Console: Focus on Debug Console View');
    const input = page.locator('.repl-input-wrapper .monaco-editor').first();
    await input.waitFor();
    await input.click();
    await page.keyboard.type('layers.10');
    await page.keyboard.press('Enter');
    await page.locator('.repl .monaco-list-row', { hasText: /layers\.10 · layer · [\d,]+ params/ }).first().waitFor({ timeout: 15000 });
    await shot('02c-console-module');
    await closePanel();
  });

  await step('expand a tensor (hidden) in VARIABLES', async () => {
    const hidden = page.locator('.debug-variables .monaco-list-row', { hasText: /^hidden/ }).first();
    await hidden.waitFor();
    await hidden.locator('.monaco-tl-twistie').click();
    await page.locator('.debug-variables .monaco-list-row', { hasText: /^\[0\]/ }).first().waitFor();
    await page.mouse.move(5, 450);
    await shot('03-variables', 'vscode-debugging');
  });

  await step('View Tensor from the Variables context menu: heatmap, histogram, values on hover', async () => {
    const hidden = page.locator('.debug-variables .monaco-list-row', { hasText: /^hidden/ }).first();
    await hidden.click({ button: 'right' });
    const item = page.getByRole('menuitem', { name: 'View Tensor' }).first();
    await item.waitFor();
    // The workbench's context menu (in a shadow root) takes the keyboard more reliably than a synthetic click.
    await item.hover();
    await page.keyboard.press('Enter');
    const f = await webviewFrame('tensor');
    await waitInFrame(f, () => document.body.dataset.nonblank === 'true', null, 30000, 'a non-blank heatmap');
    await waitInFrame(f, () => document.querySelectorAll('#histogram canvas').length > 0, null, 10000, 'the histogram');
    await closePanel();
    await page.waitForTimeout(500);
    const box = await f.locator('#heatmap').boundingBox();
    await page.mouse.move(box.x + box.width * 0.4, box.y + box.height * 0.5);
    await waitInFrame(f, () => /hidden\[.*\] = /.test(document.querySelector('#readout').textContent), null, 5000, 'a value on hover');
    await shot('04-tensor-viewer', 'vscode-tensor-viewer');
  });

  await step('two more View Tensors open as tabs in the one viewer group (no new split)', async () => {
    for (const row of ['[0]', '[1]']) {
      const r = page.locator('.debug-variables .monaco-list-row', { hasText: new RegExp('^\\' + row.replace(']', '\\]')) }).first();
      await r.click({ button: 'right' });
      const item = page.getByRole('menuitem', { name: 'View Tensor' }).first();
      await item.waitFor();
      await item.hover();
      await page.keyboard.press('Enter');
      await page.locator('.tab', { hasText: `Tensor hidden${row}` }).first().waitFor({ timeout: 30000 });
    }
    const groups = await page.locator('.editor-group-container').count();
    const viewers = await page.locator('.tab', { hasText: /^Tensor / }).count();
    await shot('04b-three-viewers');
    if (viewers < 3) throw new Error(`${viewers} tensor viewer tabs`);
    if (groups > 2) throw new Error(`${groups} editor groups (the outline's and one for the viewers expected)`);
  });

  await step('Set Value… on a tensor pre-fills an expression, not the statistics line', async () => {
    await page.keyboard.press('Escape');
    await page.mouse.move(5, 450); // no value hover over the row
    const hidden = page.locator('.debug-variables .monaco-list-row', { hasText: /^hidden/ }).first();
    await hidden.click({ button: 'right', position: { x: 40, y: 8 } });
    const item = page.getByRole('menuitem', { name: /Set Value/ }).first();
    // The context menu now and then closes as the variables tree re-renders: open it again.
    for (let i = 0; ; i++) {
      try {
        await item.waitFor({ timeout: 8000 });
        await item.hover({ timeout: 5000 });
        await page.keyboard.press('Enter');
        break;
      } catch (e) {
        if (i >= 2) {
          await shot('set-value-menu');
          const names = await page.getByRole('menuitem').allInnerTexts().catch(() => []);
          throw new Error(`no Set Value… to choose in the menu: ${JSON.stringify(names)}`);
        }
        await page.keyboard.press('Escape');
        await hidden.click({ button: 'right', position: { x: 40, y: 8 } });
      }
    }
    const input = page.locator('.quick-input-widget input');
    await input.waitFor({ state: 'visible' });
    const value = await input.inputValue();
    if (!/^hidden\b/.test(value) || /μ=/.test(value)) throw new Error(`pre-filled ${JSON.stringify(value)}`);
    await shot('04c-set-value');
    // Halve it: the row's max must follow (written on the server, read back).
    const maxOf = async () => Number(/max=([-+\d.e]+)/.exec(await hidden.innerText())?.[1]);
    const max0 = await maxOf();
    await input.fill('hidden * 0.5');
    await input.press('Enter');
    await input.waitFor({ state: 'hidden' });
    const end = Date.now() + 15000;
    while (Math.abs((await maxOf()) - max0 / 2) > 1e-3 * Math.abs(max0)) {
      const err = page.locator('.notifications-toasts .notification-toast:has(.codicon-error)');
      if (await err.count()) throw new Error(await err.first().innerText());
      if (Date.now() > end) throw new Error(`max ${await maxOf()} after hidden * 0.5 (was ${max0})`);
      await page.waitForTimeout(250);
    }
  });

  await step('Djinn: Show VRAM Panel renders live telemetry and the session strip', async () => {
    await palette('Djinn: Show VRAM Panel');
    const f = await webviewFrame('vram');
    await waitInFrame(f, () => document.body.dataset.status === 'live' && Number(document.body.dataset.points) >= 5 && Number(document.body.dataset.sessions) === 4, null, 30000, 'live samples of 4 sessions');
    await waitInFrame(f, () => document.querySelectorAll('#chart canvas').length > 0, null, 5000, 'the chart');
    await page.mouse.move(5, 450);
    await tryPalette('View: Toggle Maximize Editor Group');
    await page.waitForTimeout(1500);
    await shot('05-vram-panel', 'vscode-vram-panel');
    await tryPalette('View: Toggle Maximize Editor Group');
  });

  await step('after Continue, VARIABLES describes the new stop that CALL STACK shows', async () => {
    const row = (re) => page.locator('.debug-variables .monaco-list-row', { hasText: re }).first();
    // The tree renders only the rows on screen: fold Activations, unfold Session, read its position.
    const position = async () => {
      const acts = row(/^Activations$/);
      if ((await acts.getAttribute('aria-expanded')) === 'true') await acts.locator('.monaco-tl-twistie').click();
      const scope = row(/^Session$/);
      await scope.waitFor();
      if ((await scope.getAttribute('aria-expanded')) !== 'true') await scope.locator('.monaco-tl-twistie').click();
      const p = row(/^position/);
      await p.waitFor();
      return p.innerText();
    };
    const before = await position();
    if (!/prefill/.test(before)) throw new Error(`before: ${before}`);
    await page.locator('.debug-toolbar .codicon-debug-continue').first().click();
    // The focused thread stops again at layers.10 of its next token: VARIABLES shows that stop
    // (hidden of one token) without a click, and CALL STACK's pass frame (behind "Show More") says so too.
    await row(/^hidden\W+f32\[1, /).waitFor({ timeout: 60000 });
    const more = page.locator('.debug-call-stack .monaco-list-row', { hasText: /Show \d+ More Stack Frames/ }).first();
    if (await more.count()) await more.click();
    await page.locator('.debug-call-stack .monaco-list-row', { hasText: /decode of token 1\b/ }).first().waitFor({ timeout: 10000 });
    const end = Date.now() + 20000;
    for (;;) {
      const text = await position().catch((e) => `(${e.message.split('\n')[0]})`);
      const all = await page.locator('.debug-variables').innerText();
      if (/decode of token 1\b/.test(text) && !/stale/.test(all)) break;
      if (Date.now() > end) throw new Error(`VARIABLES position: ${text}; ${all.replace(/\s+/g, ' ').slice(0, 200)}`);
      await page.waitForTimeout(250);
    }
    await page.mouse.move(5, 450);
    await shot('08-after-continue');
  });

  await step('stop debugging', async () => {
    await page.keyboard.press('Shift+F5');
    await page.locator('.debug-toolbar').waitFor({ state: 'hidden', timeout: 30000 });
  });

  await step('Djinn: Run Exp 3 from the palette: progress, VRAM panel live, report at the end', async () => {
    await palette('Djinn: Run Exp 3 Memory-Pressure Test');
    // The window's server (the debug session's: 0.034 GB, 32-token context) does not fit
    // exp3.yaml's run: the extension asks; restart it as the run wants (one server per window).
    const restart = page.locator('.monaco-dialog-box .monaco-button', { hasText: /^Restart it with/ }).first();
    await restart.waitFor({ timeout: 15000 });
    await shot('06a-exp3-asks');
    await restart.click();
    await page.locator('.notifications-toasts .notification-toast', { hasText: 'Djinn Exp 3' }).first().waitFor({ timeout: 60000 });
    const f = await webviewFrame('vram');
    // A 4-session run on the already started window's server takes a second or two: the panel
    // may have moved on from 'live' by now; what it must show is the run's swaps.
    await waitInFrame(f, () => {
      const m = /swaps out \/ in\s*(\d+) \/ (\d+)/.exec(document.body.innerText);
      return Number(document.body.dataset.swaps) >= 10 || (m && Number(m[1]) >= 10 && Number(m[2]) >= 10);
    }, null, 60000, 'swaps during Exp 3');
    await shot('06-exp3-running', 'vscode-exp3-running');
    const report = await webviewFrame('Exp 3 report', 180000);
    await waitInFrame(report, () => document.querySelector('#status')?.textContent === 'SUCCESS', null, 5000, 'status SUCCESS');
    await closePanel();
    await tryPalette('View: Toggle Maximize Editor Group');
    await page.waitForTimeout(800);
    await shot('07-exp3-report', 'vscode-exp3-report');
    await tryPalette('View: Toggle Maximize Editor Group');
    const results = fs.readdirSync(path.join(WS, 'exp3-results'));
    if (results.length !== 1) throw new Error(`exp3-results holds ${results.length} runs`);
  });

  await step('after Developer: Reload Window the VRAM panel comes back with its chart', async () => {
    await page.waitForTimeout(2500); // the panel saves its history every 2 s
    await palette('Developer: Reload Window');
    await page.locator('.monaco-workbench').waitFor({ timeout: 60000 });
    await page.locator('.tab', { hasText: 'Djinn VRAM' }).first().waitFor({ timeout: 60000 });
    await page.locator('.tab', { hasText: 'Djinn VRAM' }).first().click();
    const f = await webviewFrame('vram', 60000);
    await waitInFrame(f, () => Number(document.body.dataset.points) > 0 && document.querySelectorAll('#chart canvas').length > 0, null, 30000, 'the restored chart');
  });
};
