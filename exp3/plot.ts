// A small self-contained SVG line-chart renderer (no dependencies): axes with
// ticks, line series, dashed horizontal reference lines, and event markers
// drawn as a rug along the bottom of the plot area.

export interface LineSeries {
  name: string;
  color: string;
  points: Array<[number, number]>;
  dash?: string;
  width?: number;
}

export interface HLine {
  y: number;
  label: string;
  color: string;
  dash?: string;
}

export interface MarkerSeries {
  name: string;
  color: string;
  xs: number[];
  shape: "down" | "up";
}

export interface ChartSpec {
  width?: number;
  height?: number;
  title: string;
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  series: LineSeries[];
  hlines?: HLine[];
  markers?: MarkerSeries[];
  /** Forced lower end of the y axis (default 0). */
  yMin?: number;
}

/** Round tick values ("1, 2, 5 x 10^k" steps) covering [min, max]. */
export function niceTicks(min: number, max: number, count = 6): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [0, 1];
  if (max <= min) max = min + 1;
  const raw = (max - min) / Math.max(1, count - 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const start = Math.floor(min / step + 1e-9) * step;
  const ticks: number[] = [];
  for (let v = start; v <= max + step * 1e-6; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < max - step * 1e-6) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

export function fmtTick(v: number, step: number): string {
  const decimals = step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step) - 1e-9));
  return v.toFixed(decimals);
}

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]!);
}

const n1 = (v: number) => (Math.round(v * 10) / 10).toString();

export function renderChart(spec: ChartSpec): string {
  const W = spec.width ?? 900;
  const H = spec.height ?? 420;
  const m = { left: 64, right: 180, top: spec.subtitle ? 52 : 38, bottom: 48 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;

  const series = spec.series.filter((s) => s.points.length > 0);
  const hlines = spec.hlines ?? [];
  const markers = (spec.markers ?? []).filter((k) => k.xs.length > 0);
  const xs = series.flatMap((s) => s.points.map((p) => p[0])).concat(markers.flatMap((k) => k.xs));
  const ys = series.flatMap((s) => s.points.map((p) => p[1])).concat(hlines.map((h) => h.y));
  // More x ticks than y ticks: the plot is wide, and a finer step wastes less of it past the data.
  const xTicks = niceTicks(xs.length ? Math.min(...xs) : 0, xs.length ? Math.max(...xs) : 1, 9);
  const yTicks = niceTicks(spec.yMin ?? 0, ys.length ? Math.max(...ys) * 1.05 : 1);
  const [x0, x1] = [xTicks[0], xTicks[xTicks.length - 1]];
  const [y0, y1] = [yTicks[0], yTicks[yTicks.length - 1]];
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.top + ph - ((y - y0) / (y1 - y0)) * ph;
  const xStep = xTicks.length > 1 ? xTicks[1] - xTicks[0] : 1;
  const yStep = yTicks.length > 1 ? yTicks[1] - yTicks[0] : 1;

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${m.left}" y="22" font-size="15" font-weight="bold" fill="#222">${escapeXml(spec.title)}</text>`,
  );
  if (spec.subtitle) out.push(`<text x="${m.left}" y="40" fill="#555">${escapeXml(spec.subtitle)}</text>`);

  // Grid and ticks.
  out.push(`<g stroke="#e6e6e6" stroke-width="1">`);
  for (const t of yTicks) out.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${n1(sy(t))}" y2="${n1(sy(t))}"/>`);
  for (const t of xTicks) out.push(`<line x1="${n1(sx(t))}" x2="${n1(sx(t))}" y1="${m.top}" y2="${m.top + ph}"/>`);
  out.push(`</g>`);
  out.push(`<g fill="#444" class="y-ticks" text-anchor="end">`);
  for (const t of yTicks) out.push(`<text x="${m.left - 6}" y="${n1(sy(t) + 4)}">${fmtTick(t, yStep)}</text>`);
  out.push(`</g><g fill="#444" class="x-ticks" text-anchor="middle">`);
  for (const t of xTicks) out.push(`<text x="${n1(sx(t))}" y="${m.top + ph + 16}">${fmtTick(t, xStep)}</text>`);
  out.push(`</g>`);
  out.push(
    `<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`,
    `<text x="${m.left + pw / 2}" y="${H - 10}" text-anchor="middle" fill="#333">${escapeXml(spec.xLabel)}</text>`,
    `<text transform="translate(16 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle" fill="#333">${escapeXml(spec.yLabel)}</text>`,
  );

  // Reference lines (budget).
  for (const h of hlines) {
    const y = n1(sy(h.y));
    out.push(
      `<line class="hline" x1="${m.left}" x2="${m.left + pw}" y1="${y}" y2="${y}" stroke="${h.color}" stroke-width="1.5" stroke-dasharray="${h.dash ?? "6 4"}"/>`,
      `<text x="${m.left + pw - 4}" y="${n1(sy(h.y) - 5)}" text-anchor="end" fill="${h.color}">${escapeXml(h.label)}</text>`,
    );
  }

  // Lines.
  for (const s of series) {
    const pts = s.points.map(([x, y]) => `${n1(sx(x))},${n1(sy(y))}`).join(" ");
    const dash = s.dash ? ` stroke-dasharray="${s.dash}"` : "";
    out.push(`<polyline class="series" fill="none" stroke="${s.color}" stroke-width="${s.width ?? 1.8}"${dash} stroke-linejoin="round" points="${pts}"/>`);
  }

  // Markers: one rug row each, just above the x axis.
  markers.forEach((k, row) => {
    const y = m.top + ph - 8 - row * 12;
    const tri = k.shape === "down" ? (x: number) => `${n1(x - 4)},${y - 4} ${n1(x + 4)},${y - 4} ${n1(x)},${y + 4}` : (x: number) => `${n1(x - 4)},${y + 4} ${n1(x + 4)},${y + 4} ${n1(x)},${y - 4}`;
    out.push(`<g class="markers" fill="${k.color}" fill-opacity="0.75">`);
    for (const x of k.xs) out.push(`<polygon points="${tri(sx(x))}"/>`);
    out.push(`</g>`);
  });

  // Legend.
  const lx = m.left + pw + 16;
  let ly = m.top + 6;
  out.push(`<g class="legend" fill="#333">`);
  for (const s of series) {
    const dash = s.dash ? ` stroke-dasharray="${s.dash}"` : "";
    out.push(`<line x1="${lx}" x2="${lx + 22}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2.5"${dash}/>`, `<text x="${lx + 28}" y="${ly + 4}">${escapeXml(s.name)}</text>`);
    ly += 20;
  }
  for (const h of hlines) {
    out.push(`<line x1="${lx}" x2="${lx + 22}" y1="${ly}" y2="${ly}" stroke="${h.color}" stroke-width="1.5" stroke-dasharray="${h.dash ?? "6 4"}"/>`, `<text x="${lx + 28}" y="${ly + 4}">${escapeXml(h.label)}</text>`);
    ly += 20;
  }
  for (const k of markers) {
    const pts = k.shape === "down" ? `${lx + 7},${ly - 4} ${lx + 15},${ly - 4} ${lx + 11},${ly + 4}` : `${lx + 7},${ly + 4} ${lx + 15},${ly + 4} ${lx + 11},${ly - 4}`;
    out.push(`<polygon points="${pts}" fill="${k.color}"/>`, `<text x="${lx + 28}" y="${ly + 4}">${escapeXml(`${k.name} (${k.xs.length})`)}</text>`);
    ly += 20;
  }
  out.push(`</g></svg>`);
  return out.join("\n") + "\n";
}
