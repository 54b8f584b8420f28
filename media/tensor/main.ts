// The tensor viewer: header (dtype, shape, stats, NaN/Inf), slice picker, heatmap of the
// 2-D slice (decoded on the host by the native codec), histogram (uPlot), values on hover.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { el, fmtBytes, onThemeChange, themeColor, vscodeApi } from "../shared/vscode";

interface Header {
  expression: string;
  name: string;
  sessionId: number;
  debugSession: string;
  dtype: string;
  shape: number[];
  numel: number;
  min: number;
  max: number;
  mean: number;
  std: number;
  l2: number;
  nan: number;
  inf: number;
  description: string;
  computeMs: number;
  writable: boolean;
  codec: string;
  codecLine: string;
}
interface View {
  rowDim: number;
  colDim: number;
  index: number[];
}
// The codec's own statistics type (native/api.ts has no imports, so the webview can use it).
type Stats = import("../../native/api").TensorStats;
interface SliceMsg {
  view: View;
  rows: number;
  cols: number;
  stride: number;
  sliceShape: number[];
  dtype: string;
  image: Float32Array;
  imgRows: number;
  imgCols: number;
  values?: Float32Array;
  stats: Stats;
  hist: { counts: number[]; lo: number; hi: number; below: number; above: number; nan: number; inf: number };
  fetch: { bytes: number; ms: number; chunks: number; decodeMs: number; codec: string };
}

// restore: what the host needs to show this tensor again after a window reload (src/tensorViewer.ts SavedViewer)
const vscode = vscodeApi<{ view?: View; restore?: unknown }>();
let header: Header | undefined;
let view: View | undefined;
let slice: SliceMsg | undefined;
let histPlot: uPlot | undefined;

const app = document.getElementById("app")!;
const banner = el("div", { id: "banner", class: "banner", hidden: "" });
const head = el("div", { id: "header", class: "header" });
const picker = el("div", { id: "picker", class: "picker" });
const canvas = el("canvas", { id: "heatmap", class: "heatmap" });
const colorbar = el("div", { id: "colorbar", class: "colorbar" });
const readout = el("div", { id: "readout", class: "readout" }, "hover the heatmap for values");
const sliceInfo = el("div", { id: "slice-info", class: "muted" });
const sliceStats = el("div", { id: "slice-stats", class: "stats" });
const histBox = el("div", { id: "histogram", class: "histogram" });
app.append(
  head,
  banner,
  el("h3", {}, "Slice"),
  picker,
  el("div", { class: "heat-wrap" }, canvas),
  colorbar,
  readout,
  sliceInfo,
  el("h3", {}, "Slice statistics (decoded on the client)"),
  sliceStats,
  el("h3", {}, "Histogram of the slice"),
  histBox,
);

// ------------------------------------------------------------------ format

function g(x: number, digits = 4): string {
  if (Number.isNaN(x)) return "NaN";
  if (!Number.isFinite(x)) return x > 0 ? "+Inf" : "-Inf";
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 1e5 || a < 1e-3) return x.toExponential(digits - 1);
  return Number(x.toPrecision(digits)).toString();
}

function kv(label: string, value: string, cls = ""): HTMLElement {
  return el("div", { class: `kv ${cls}` }, el("span", { class: "k" }, label), el("span", { class: "v" }, value));
}

// ------------------------------------------------------------------ header

function renderHeader(): void {
  const h = header!;
  head.replaceChildren(
    el("div", { class: "title" }, el("span", { class: "name" }, h.expression), el("span", { class: "server" }, `session ${h.sessionId} · ${h.debugSession}`)),
    el("div", { class: "muted" }, h.description || ""),
    el(
      "div",
      { class: "stats" },
      kv("dtype", h.dtype),
      kv("shape", `[${h.shape.join(", ")}]`),
      kv("numel", h.numel.toLocaleString("en-US")),
      kv("min", g(h.min)),
      kv("max", g(h.max)),
      kv("mean", g(h.mean)),
      kv("std", g(h.std)),
      kv("‖x‖₂", g(h.l2)),
      kv("NaN", String(h.nan), h.nan > 0 ? "bad" : ""),
      kv("Inf", String(h.inf), h.inf > 0 ? "bad" : ""),
      kv("stats on server", `${h.computeMs.toFixed(2)} ms`),
      kv("codec", h.codec === "native" ? "native addon" : "TypeScript fallback"),
    ),
  );
  head.title = h.codecLine;
}

// ------------------------------------------------------------------ picker

function renderPicker(): void {
  const h = header!;
  const v = view!;
  const n = h.shape.length;
  if (n === 0) {
    picker.replaceChildren(el("span", { class: "muted" }, "a scalar"));
    return;
  }
  const dimOptions = (selected: number, allowNone: boolean) => {
    const s = el("select");
    if (allowNone) s.append(el("option", { value: "-1" }, "(none: one row)"));
    for (let d = 0; d < n; d++) s.append(el("option", { value: String(d) }, `dim ${d} (${h.shape[d]})`));
    s.value = String(selected);
    return s;
  };
  const rowSel = dimOptions(v.rowDim, true);
  const colSel = dimOptions(v.colDim, false);
  rowSel.id = "row-dim";
  colSel.id = "col-dim";
  const change = (next: View) => {
    view = next;
    vscode.setState({ ...vscode.getState(), view });
    vscode.postMessage({ type: "view", view });
    renderPicker();
  };
  rowSel.onchange = () => {
    let rowDim = Number(rowSel.value);
    let colDim = v.colDim;
    if (rowDim === colDim) colDim = v.rowDim >= 0 ? v.rowDim : [...Array(n).keys()].find((d) => d !== rowDim)!;
    change({ ...v, rowDim, colDim });
  };
  colSel.onchange = () => {
    const colDim = Number(colSel.value);
    let rowDim = v.rowDim;
    if (rowDim === colDim) rowDim = v.colDim;
    change({ ...v, rowDim, colDim });
  };
  const fixed: HTMLElement[] = [];
  for (let d = 0; d < n; d++) {
    if (d === v.rowDim || d === v.colDim) continue;
    const size = h.shape[d];
    const num = el("input", { type: "number", min: "0", max: String(size - 1), value: String(v.index[d]), class: "index", id: `index-${d}` });
    const range = el("input", { type: "range", min: "0", max: String(Math.max(0, size - 1)), value: String(v.index[d]) });
    const set = (x: number) => {
      const index = [...v.index];
      index[d] = Math.max(0, Math.min(size - 1, Math.trunc(x) || 0));
      change({ ...v, index });
    };
    num.onchange = () => set(Number(num.value));
    range.oninput = () => (num.value = range.value);
    range.onchange = () => set(Number(range.value));
    fixed.push(el("label", { class: "fixed" }, `dim ${d} index `, num, range, el("span", { class: "muted" }, ` of ${size}`)));
  }
  picker.replaceChildren(el("label", {}, "rows ", rowSel), el("label", {}, "cols ", colSel), ...fixed);
}

// ----------------------------------------------------------------- heatmap

const VIRIDIS = [
  [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37],
];
const NEG = [33, 102, 172];
const POS = [178, 24, 43];
const MID = [247, 247, 247];

function lerp(a: number[], b: number[], t: number): number[] {
  return [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t];
}

interface Scale {
  diverging: boolean;
  lo: number;
  hi: number;
  color(v: number): number[];
}

function scaleFor(s: Stats): Scale {
  const lo = Number.isFinite(s.min) ? s.min : 0;
  const hi = Number.isFinite(s.max) ? s.max : 1;
  if (lo < 0 && hi > 0) {
    const a = Math.max(-lo, hi) || 1;
    return {
      diverging: true,
      lo: -a,
      hi: a,
      color: (v) => (v < 0 ? lerp(MID, NEG, Math.min(1, -v / a)) : lerp(MID, POS, Math.min(1, v / a))),
    };
  }
  const span = hi - lo || 1;
  return {
    diverging: false,
    lo,
    hi,
    color: (v) => {
      const t = Math.max(0, Math.min(1, (v - lo) / span)) * (VIRIDIS.length - 1);
      const i = Math.min(VIRIDIS.length - 2, Math.floor(t));
      return lerp(VIRIDIS[i], VIRIDIS[i + 1], t - i);
    },
  };
}

function drawHeatmap(): boolean {
  const s = slice!;
  const scale = scaleFor(s.stats);
  canvas.width = s.imgCols;
  canvas.height = s.imgRows;
  const ctx = canvas.getContext("2d")!;
  const img = ctx.createImageData(s.imgCols, s.imgRows);
  let first: number | undefined;
  let varied = false;
  for (let i = 0; i < s.image.length; i++) {
    const v = s.image[i];
    let c: number[];
    if (Number.isNaN(v)) c = [255, 0, 255];
    else if (!Number.isFinite(v)) c = v > 0 ? [255, 255, 255] : [0, 0, 0];
    else c = scale.color(v);
    img.data[i * 4] = c[0];
    img.data[i * 4 + 1] = c[1];
    img.data[i * 4 + 2] = c[2];
    img.data[i * 4 + 3] = 255;
    if (first === undefined) first = v;
    else if (v !== first) varied = true;
  }
  ctx.putImageData(img, 0, 0);
  // Display size: the panel's width; rows at least 6 px tall (up to 420 px) so short slices stay visible.
  const width = Math.max(200, Math.min(app.clientWidth - 8, 1400));
  const natural = (s.imgRows / s.imgCols) * width;
  const height = Math.max(natural, Math.min(s.imgRows * 6, 420), 24);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${Math.min(height, 640)}px`;
  const stops = scale.diverging ? [NEG, MID, POS] : VIRIDIS;
  const grad = `linear-gradient(to right, ${stops.map((c) => `rgb(${c.join(",")})`).join(", ")})`;
  colorbar.replaceChildren(
    el("span", {}, g(scale.lo)),
    el("span", { class: "bar", style: `background: ${grad}` }),
    el("span", {}, g(scale.hi)),
    el("span", { class: "muted" }, scale.diverging ? " diverging, centred on 0 · NaN magenta · ±Inf white/black" : " sequential · NaN magenta"),
  );
  return varied || s.image.length === 1;
}

function fullIndex(r: number, c: number): number[] {
  const s = slice!;
  const idx = [...s.view.index];
  if (s.view.rowDim >= 0) idx[s.view.rowDim] = r * s.stride;
  if (s.view.colDim >= 0) idx[s.view.colDim] = c * s.stride;
  return idx;
}

function showValue(r: number, c: number, v: number): void {
  const idx = fullIndex(r, c);
  readout.textContent = `${header!.name}[${idx.join(", ")}] = ${g(v, 6)}`;
}

let hoverPending = false;
canvas.addEventListener("mousemove", (ev) => {
  const s = slice;
  if (!s) return;
  const rect = canvas.getBoundingClientRect();
  const r = Math.min(s.rows - 1, Math.max(0, Math.floor(((ev.clientY - rect.top) / rect.height) * s.rows)));
  const c = Math.min(s.cols - 1, Math.max(0, Math.floor(((ev.clientX - rect.left) / rect.width) * s.cols)));
  if (s.values) showValue(r, c, s.values[r * s.cols + c]);
  else if (!hoverPending) {
    hoverPending = true;
    vscode.postMessage({ type: "hover", r, c });
  }
});
canvas.addEventListener("mouseleave", () => (readout.textContent = "hover the heatmap for values"));

// --------------------------------------------------------------- histogram

function drawHistogram(): void {
  const s = slice!;
  const h = s.hist;
  const w = (h.hi - h.lo) / h.counts.length;
  const xs = h.counts.map((_, i) => h.lo + (i + 0.5) * w);
  const color = themeColor("--vscode-charts-blue", "#3794ff");
  const fg = themeColor("--vscode-editor-foreground", "#ccc");
  const grid = themeColor("--vscode-editorWidget-border", "#444");
  histPlot?.destroy();
  histBox.replaceChildren();
  histPlot = new uPlot(
    {
      width: Math.max(300, histBox.clientWidth || 600),
      height: 200,
      legend: { show: true },
      scales: { x: { time: false }, y: { range: (_u, _min, max) => [0, Math.max(1, max) * 1.05] } },
      axes: [
        { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } },
        { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, size: 50 },
      ],
      series: [
        { label: "value", value: (_u, v) => (v == null ? "–" : `${g(v - w / 2)} … ${g(v + w / 2)}`) },
        { label: "count", stroke: color, fill: color, paths: uPlot.paths.bars!({ size: [0.95, Infinity] }), points: { show: false } },
      ],
    },
    [xs, h.counts],
    histBox,
  );
}

function renderSliceInfo(): void {
  const s = slice!;
  const f = s.fetch;
  const strided = s.stride > 1 ? ` · every ${s.stride}th row and column (the slice is larger than 1M values)` : "";
  sliceInfo.textContent = `${s.rows} × ${s.cols} values${strided} · picture ${s.imgRows} × ${s.imgCols} px · fetched ${fmtBytes(f.bytes)} of ${s.dtype} in ${f.ms} ms (${f.chunks} chunk${f.chunks === 1 ? "" : "s"}) · decoded by the ${f.codec === "native" ? "native codec" : "TypeScript codec"} in ${f.decodeMs.toFixed(2)} ms`;
  const st = s.stats;
  sliceStats.replaceChildren(
    kv("min", g(st.min)),
    kv("max", g(st.max)),
    kv("mean", g(st.mean)),
    kv("std", g(st.std)),
    kv("‖x‖₂", g(st.l2Norm)),
    kv("|x| max", g(st.absMax)),
    kv("zeros", String(st.zeroCount)),
    kv("NaN", String(st.nanCount), st.nanCount > 0 ? "bad" : ""),
    kv("+Inf / -Inf", `${st.posInfCount} / ${st.negInfCount}`, st.posInfCount + st.negInfCount > 0 ? "bad" : ""),
  );
}

function setBanner(kind: "" | "stale" | "error", text: string): void {
  banner.hidden = !kind;
  banner.className = `banner ${kind === "error" ? "gone" : kind}`;
  banner.textContent = text;
  document.body.dataset.banner = kind;
}

// ---------------------------------------------------------------- messages

window.addEventListener("message", (ev: MessageEvent) => {
  const m = ev.data;
  switch (m?.type) {
    case "tensor":
      header = m.header;
      view = m.view;
      if (m.restore) vscode.setState({ ...vscode.getState(), view, restore: m.restore });
      setBanner("", "");
      renderHeader();
      renderPicker();
      break;
    case "slice": {
      slice = m as SliceMsg;
      view = slice.view;
      renderPicker();
      const nonBlank = drawHeatmap();
      drawHistogram();
      renderSliceInfo();
      document.body.dataset.rendered = `${slice.rows}x${slice.cols}`;
      document.body.dataset.nonblank = String(nonBlank);
      vscode.postMessage({ type: "rendered", rows: slice.rows, cols: slice.cols, nonBlank });
      break;
    }
    case "hover":
      hoverPending = false;
      showValue(m.r, m.c, m.value);
      break;
    case "stale":
      setBanner("stale", m.message);
      break;
    case "error":
      setBanner("error", m.message);
      break;
  }
});

onThemeChange(() => slice && drawHistogram());
new ResizeObserver(() => {
  if (!slice) return;
  drawHeatmap();
  histPlot?.setSize({ width: Math.max(300, histBox.clientWidth), height: 200 });
}).observe(app);
vscode.postMessage({ type: "ready" });
