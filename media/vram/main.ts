// The VRAM panel: weights, resident KV, swapped (host) KV, NVML used and the budget over
// time (uPlot), swap-out / swap-in markers with their measured milliseconds, a strip with
// each session's state. Live from the host's telemetry messages; history kept with
// setState so a reload shows it at once.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { el, fmtBytes, fmtGb, onThemeChange, themeColor, vscodeApi } from "../shared/vscode";

import type { Sample, SwapMark } from "../shared/vramMessages";
import { cellClass, diskCells } from "./disk";
interface Status {
  state: "idle" | "connecting" | "live" | "gone";
  target?: { id: string; address: string; label: string };
  info?: { model: string; device: string; deviceName: string; dtype: string; layers: number; budget: number };
  message: string;
}
interface SavedState {
  samples: Sample[];
  swaps: SwapMark[];
  status?: Status;
}

const MAX_POINTS = 3000;
const MAX_SWAPS = 4000;
const SAVE_EVERY_MS = 2000;
const vscode = vscodeApi<SavedState>();

let samples: Sample[] = [];
let swaps: SwapMark[] = [];
let status: Status = { state: "idle", message: "Waiting for the extension…" };
let plot: uPlot | undefined;
let kvPlot: uPlot | undefined;
let dirty = false;
let lastSave = 0;
let lastReport = 0;
let reportTimer: ReturnType<typeof setTimeout> | undefined;

// ------------------------------------------------------------------ layout

const app = document.getElementById("app")!;
const banner = el("div", { id: "banner", class: "banner" });
const title = el("div", { class: "title" }, el("span", { class: "name" }, "Djinn VRAM"), el("span", { id: "server", class: "server" }));
const numbers = el("div", { id: "numbers", class: "numbers" });
const chartBox = el("div", { id: "chart", class: "chart" });
const kvBox = el("div", { id: "kv-chart", class: "chart small" });
const strip = el("div", { id: "strip", class: "strip" });
const stripLegend = el(
  "div",
  { class: "strip-legend" },
  ...["running", "paused (KV on device)", "paused (KV on host)", "on disk (spilled)", "moving", "waiting / created", "finished"].map((label, i) =>
    el("span", {}, el("i", { class: `cell ${["running", "paused-device", "paused-host", "paused-disk", "moving", "created", "finished"][i]}` }), label),
  ),
);
const swapTable = el("table", { id: "swaps", class: "swaps" });
app.append(
  title,
  banner,
  numbers,
  chartBox,
  el("h3", {}, "KV cache: on the device and swapped to host memory"),
  kvBox,
  el("h3", {}, "Sessions"),
  strip,
  stripLegend,
  el("h3", {}, "Recent swaps (measured on the server)"),
  swapTable,
);

// ------------------------------------------------------------------- chart

function colors() {
  return {
    fg: themeColor("--vscode-editor-foreground", "#ccc"),
    grid: themeColor("--vscode-editorWidget-border", "#444"),
    weights: themeColor("--vscode-charts-blue", "#3794ff"),
    resident: themeColor("--vscode-charts-green", "#89d185"),
    swapped: themeColor("--vscode-charts-purple", "#b180d7"),
    nvml: themeColor("--vscode-charts-yellow", "#cca700"),
    budget: themeColor("--vscode-charts-red", "#f14c4c"),
    out: themeColor("--vscode-charts-orange", "#d18616"),
    in: themeColor("--vscode-charts-blue", "#3794ff"),
  };
}

function alpha(color: string, a: number): string {
  const m = /^#([0-9a-f]{6})$/i.exec(color.trim());
  if (!m) return color;
  const n = parseInt(m[1], 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
}

const GB = 1e9;

function kvData(): uPlot.AlignedData {
  return [
    samples.map((s) => s.t),
    samples.map((s) => s.residentKv / GB),
    samples.map((s) => s.swappedKv / GB),
    samples.map((s) => s.sessions.filter((x) => x[1] === "paused").length),
  ] as uPlot.AlignedData;
}

function data(): uPlot.AlignedData {
  const xs = samples.map((s) => s.t);
  return [
    xs,
    samples.map((s) => s.weights / GB),
    samples.map((s) => (s.weights + s.workspace + s.residentKv) / GB),
    samples.map((s) => s.swappedKv / GB),
    samples.map((s) => (s.nvml > 0 ? s.nvml / GB : null)),
    samples.map((s) => s.budget / GB),
  ] as uPlot.AlignedData;
}

/** Draws the swap markers: a rug of triangles at the bottom, with their ms when few. */
function swapMarkers(c: ReturnType<typeof colors>): uPlot.Plugin {
  return {
    hooks: {
      draw: [
        (u: uPlot) => {
          const [x0, x1] = [u.scales.x.min ?? 0, u.scales.x.max ?? 0];
          const visible = swaps.filter((s) => s.t >= x0 && s.t <= x1);
          const ctx = u.ctx;
          const { left, top, width, height } = u.bbox;
          const px = uPlot.pxRatio;
          const size = 5 * px;
          ctx.save();
          ctx.beginPath();
          ctx.rect(left, top, width, height);
          ctx.clip();
          for (const s of visible) {
            const x = u.valToPos(s.t, "x", true);
            const base = top + height - (s.dir === "out" ? 2 * size : 0.5 * size);
            ctx.fillStyle = s.dir === "out" ? c.out : c.in;
            ctx.beginPath();
            if (s.dir === "out") {
              ctx.moveTo(x - size, base - size);
              ctx.lineTo(x + size, base - size);
              ctx.lineTo(x, base);
            } else {
              ctx.moveTo(x - size, base);
              ctx.lineTo(x + size, base);
              ctx.lineTo(x, base - size);
            }
            ctx.fill();
          }
          if (visible.length > 0 && visible.length <= 60) {
            ctx.font = `${10 * px}px var(--vscode-font-family, sans-serif)`;
            ctx.fillStyle = c.fg;
            ctx.textAlign = "center";
            const lastX = { out: -Infinity, in: -Infinity };
            for (const s of visible) {
              const x = u.valToPos(s.t, "x", true);
              if (x - lastX[s.dir] < 46 * px) continue; // no overlapping labels
              lastX[s.dir] = x;
              ctx.fillText(`${s.ms.toFixed(1)} ms`, x, top + height - (s.dir === "out" ? 3.4 : 1.9) * size - 2 * px);
            }
          }
          ctx.restore();
        },
      ],
    },
  };
}

function swapsNear(t: number, u: uPlot): SwapMark[] {
  const span = ((u.scales.x.max ?? 0) - (u.scales.x.min ?? 0)) / Math.max(1, u.bbox.width / uPlot.pxRatio) * 6;
  return swaps.filter((s) => Math.abs(s.t - t) <= span);
}

const hover = el("div", { id: "hover", class: "hover" });

function makePlot(): void {
  const c = colors();
  plot?.destroy();
  chartBox.replaceChildren();
  const width = Math.max(300, chartBox.clientWidth || app.clientWidth || 600);
  const axis = { stroke: c.fg, grid: { stroke: alpha(c.grid, 0.6), width: 1 }, ticks: { stroke: alpha(c.grid, 0.6), width: 1 } };
  plot = new uPlot(
    {
      width,
      height: 320,
      legend: { live: true },
      cursor: { drag: { x: true, y: false }, sync: { key: "djinn-vram" } },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(max, 1e-3) * 1.08] } },
      axes: [
        { ...axis },
        { ...axis, label: "GB", size: 60, values: (_u, vals) => vals.map((v) => (v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(3))) },
      ],
      series: [
        {},
        { label: "Weights", points: { show: false }, stroke: c.weights, fill: alpha(c.weights, 0.25), width: 1.5, value: (_u, v) => (v == null ? "–" : `${v.toFixed(3)} GB`) },
        { points: { show: false }, label: "Weights + workspace + resident KV", stroke: c.resident, fill: alpha(c.resident, 0.18), width: 1.5, value: (_u, v) => (v == null ? "–" : `${v.toFixed(3)} GB`) },
        { points: { show: false }, label: "Swapped KV (host)", stroke: c.swapped, dash: [6, 4], width: 1.5, value: (_u, v) => (v == null ? "–" : `${v.toFixed(3)} GB`) },
        { points: { show: false }, label: "NVML used", stroke: c.nvml, width: 1.5, spanGaps: false, value: (_u, v) => (v == null ? "n/a" : `${v.toFixed(3)} GB`) },
        { points: { show: false }, label: "Budget", stroke: c.budget, dash: [10, 5], width: 2, value: (_u, v) => (v == null ? "–" : `${v.toFixed(3)} GB`) },
      ],
      plugins: [swapMarkers(c)],
      hooks: {
        setCursor: [
          (u) => {
            const idx = u.cursor.idx;
            if (idx == null || !samples[idx]) {
              hover.textContent = "";
              return;
            }
            const near = swapsNear(u.data[0][idx] as number, u);
            hover.textContent = near.length
              ? near.slice(0, 6).map((s) => `swap-${s.dir} session ${s.sessionId}: ${fmtBytes(s.bytes)} in ${s.ms.toFixed(2)} ms (${s.gbps.toFixed(1)} GB/s)`).join("  ·  ")
              : "";
          },
        ],
      },
    },
    data(),
    chartBox,
  );
  chartBox.append(hover);

  kvPlot?.destroy();
  kvBox.replaceChildren();
  const gbFmt = (_u: uPlot, v: number | null) => (v == null ? "–" : `${(v * 1000).toFixed(2)} MB`);
  kvPlot = new uPlot(
    {
      width,
      height: 170,
      legend: { live: true },
      cursor: { sync: { key: "djinn-vram" } },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(max, 1e-6) * 1.1] }, n: { range: (_u, _min, max) => [0, Math.max(1, max) * 1.1] } },
      axes: [
        { ...axis },
        { ...axis, label: "GB", size: 60, values: (_u, vals) => vals.map((v) => (v >= 1 ? v.toFixed(1) : v >= 0.01 ? v.toFixed(2) : v.toFixed(4))) },
        { ...axis, scale: "n", side: 1, label: "paused", size: 50, grid: { show: false } },
      ],
      series: [
        {},
        { points: { show: false }, label: "Resident KV", stroke: c.resident, fill: alpha(c.resident, 0.25), width: 1.5, value: gbFmt },
        { points: { show: false }, label: "Swapped KV (host)", stroke: c.swapped, fill: alpha(c.swapped, 0.2), width: 1.5, value: gbFmt },
        { points: { show: false }, label: "Sessions paused", stroke: c.fg, scale: "n", width: 1, dash: [2, 3], value: (_u, v) => (v == null ? "–" : String(v)) },
      ],
      plugins: [swapMarkers(c)],
    },
    kvData(),
    kvBox,
  );
}

// ------------------------------------------------------------------ render

function renderNumbers(): void {
  const s = samples[samples.length - 1];
  const cell = (label: string, value: string, cls = "") => el("div", { class: `num ${cls}` }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
  if (!s) {
    numbers.replaceChildren(cell("samples", "none yet"));
    return;
  }
  const last = (dir: "out" | "in") => {
    for (let i = swaps.length - 1; i >= 0; i--) if (swaps[i].dir === dir) return `${swaps[i].ms.toFixed(2)} ms`;
    return "–";
  };
  numbers.replaceChildren(
    cell("budget", `${fmtGb(s.budget)} GB`, "budget"),
    cell("accounted", `${fmtGb(s.accounted)} GB`, s.budget > 0 && s.accounted > s.budget ? "over" : ""),
    cell("weights", `${fmtGb(s.weights)} GB`, "weights"),
    cell("resident KV", `${fmtGb(s.residentKv)} GB`, "resident"),
    cell("swapped KV (host)", `${fmtGb(s.swappedKv)} GB`, "swapped"),
    cell("NVML used", s.nvml > 0 ? `${fmtGb(s.nvml)} GB` : "n/a (CPU)", "nvml"),
    cell("host pool", `${fmtGb(s.hostPoolUsed)} / ${fmtGb(s.hostPool)} GB`),
    cell("swaps out / in", `${s.swapOuts} / ${s.swapIns}`),
    cell("last swap-out", last("out")),
    cell("last swap-in", last("in")),
    ...diskCells(s).map(([label, value, cls]) => cell(label, value, cls)),
  );
}



function renderStrip(): void {
  const s = samples[samples.length - 1];
  if (!s || s.sessions.length === 0) {
    strip.replaceChildren(el("span", { class: "muted" }, "no sessions"));
    return;
  }
  strip.replaceChildren(
    ...s.sessions.map(([id, state, kv, layer, point]) => {
      const where = state === "paused" ? ` @ layers.${layer}${point ? "." + point : ""}` : "";
      return el("div", { class: `cell ${cellClass(state, kv)}`, title: `session ${id}: ${state}${where}, KV ${kv}` }, String(id));
    }),
  );
}

function renderSwaps(): void {
  const recent = swaps.slice(-12).reverse();
  if (recent.length === 0) {
    swapTable.replaceChildren(el("tr", {}, el("td", { class: "muted" }, "no swaps yet")));
    return;
  }
  const t0 = samples[0]?.t ?? recent[recent.length - 1].t;
  swapTable.replaceChildren(
    el("tr", {}, ...["t (s)", "", "session", "bytes", "ms", "GB/s"].map((h) => el("th", {}, h))),
    ...recent.map((s) =>
      el(
        "tr",
        { class: s.dir },
        el("td", {}, (s.t - t0).toFixed(2)),
        el("td", {}, s.dir === "out" ? "▼ out to host" : "▲ in to device"),
        el("td", {}, String(s.sessionId)),
        el("td", {}, fmtBytes(s.bytes)),
        el("td", { class: "ms" }, s.ms.toFixed(2)),
        el("td", {}, s.gbps.toFixed(2)),
      ),
    ),
  );
}

function renderStatus(): void {
  const st = status;
  const server = document.getElementById("server")!;
  server.textContent = st.info ? `${st.info.model} (${st.info.dtype}) on ${st.info.deviceName || st.info.device} · ${st.target?.address ?? ""}` : st.target ? `${st.target.label} · ${st.target.address}` : "";
  banner.className = `banner ${st.state}`;
  document.body.dataset.status = st.state;
  if (st.state === "live") {
    banner.replaceChildren();
    banner.hidden = true;
    return;
  }
  banner.hidden = false;
  const msg = st.state === "gone" ? `⚠ Server gone. ${st.message}` : st.message;
  const children: Array<Node | string> = [el("span", {}, msg)];
  if (st.state === "gone") {
    const reconnect = el("button", {}, "Reconnect");
    reconnect.onclick = () => vscode.postMessage({ type: "command", command: "djinn.reconnect" });
    children.push(reconnect);
  }
  if (st.state === "idle" || st.state === "gone") {
    const start = el("button", {}, "Start Local Server");
    start.onclick = () => vscode.postMessage({ type: "command", command: "djinn.startServer" });
    const connect = el("button", {}, "Connect to Server…");
    connect.onclick = () => vscode.postMessage({ type: "command", command: "djinn.connectServer" });
    children.push(start, connect);
  }
  banner.replaceChildren(...children);
}

function render(): void {
  dirty = false;
  if (!plot) makePlot();
  plot!.setData(data());
  kvPlot?.setData(kvData());
  renderNumbers();
  renderStrip();
  renderSwaps();
  renderStatus();
  const last = samples[samples.length - 1];
  document.body.dataset.points = String(samples.length);
  document.body.dataset.sessions = String(last?.sessions.length ?? 0);
  document.body.dataset.swaps = String(swaps.length);
  const now = Date.now();
  clearTimeout(reportTimer);
  const report = () => {
    lastReport = Date.now();
    const l = samples[samples.length - 1];
    vscode.postMessage({ type: "rendered", points: samples.length, sessions: l?.sessions.length ?? 0, swaps: swaps.length, status: status.state });
  };
  if (now - lastReport > 1000) report();
  else reportTimer = setTimeout(report, 1000);
  if (now - lastSave > SAVE_EVERY_MS) {
    lastSave = now;
    vscode.setState({ samples: samples.slice(-1500), swaps: swaps.slice(-1000), status });
  }
}

function schedule(): void {
  if (dirty) return;
  dirty = true;
  requestAnimationFrame(render);
}

// ---------------------------------------------------------------- messages

window.addEventListener("message", (ev: MessageEvent) => {
  const m = ev.data;
  switch (m?.type) {
    case "init": {
      status = m.status;
      // The host's history is the truth when it has one (or when it switched to another
      // server's history); else keep what was restored.
      if (m.reset || m.samples.length > 0 || status.state === "live") {
        samples = m.samples;
        swaps = m.swaps;
      }
      schedule();
      break;
    }
    case "sample":
      samples.push(m.sample);
      if (samples.length > MAX_POINTS) samples.splice(0, samples.length - MAX_POINTS);
      schedule();
      break;
    case "swap":
      swaps.push(m.swap);
      if (swaps.length > MAX_SWAPS) swaps.splice(0, swaps.length - MAX_SWAPS);
      schedule();
      break;
    case "status":
      // The history is per server address: the host sends "init" when it switches; a server
      // that is gone and back keeps its history.
      status = m.status;
      schedule();
      break;
  }
});

const saved = vscode.getState();
if (saved) {
  samples = saved.samples ?? [];
  swaps = saved.swaps ?? [];
  if (saved.status) status = { ...saved.status, state: saved.status.state === "live" ? "connecting" : saved.status.state, message: "Restored; reconnecting…" };
}
new ResizeObserver(() => {
  const width = Math.max(300, chartBox.clientWidth);
  plot?.setSize({ width, height: 320 });
  kvPlot?.setSize({ width, height: 170 });
}).observe(chartBox);
onThemeChange(() => {
  makePlot();
  schedule();
});
render();
vscode.postMessage({ type: "ready" });
