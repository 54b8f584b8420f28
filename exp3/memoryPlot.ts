// The Exp 3 chart: accounted VRAM, NVML, resident and host KV over time, the
// budget line, and swap markers, from the results' telemetry and swap events.
import { renderChart, type LineSeries } from "./plot";
import type { TelemetryPoint } from "./recorder";

export interface MemoryPlotInput {
  title: string;
  subtitle?: string;
  budgetGb: number;
  telemetry: TelemetryPoint[];
  swapOutTimes: number[];
  swapInTimes: number[];
}

export function memoryPlotSvg(x: MemoryPlotInput): string {
  const line = (name: string, color: string, pick: (p: TelemetryPoint) => number, dash?: string): LineSeries => ({
    name,
    color,
    dash,
    points: x.telemetry.map((p) => [p.t, pick(p)] as [number, number]),
  });
  const series = [line("accounted VRAM", "#1f6fd1", (p) => p.accounted_gb)];
  if (x.telemetry.some((p) => p.nvml_used_gb > 0)) series.push(line("NVML used", "#8e44ad", (p) => p.nvml_used_gb));
  series.push(line("resident KV", "#27ae60", (p) => p.resident_kv_gb), line("KV in host pool", "#e67e22", (p) => p.swapped_kv_gb, "5 3"));
  return renderChart({
    width: 900,
    height: 420,
    title: x.title,
    subtitle: x.subtitle,
    xLabel: "time since start (s)",
    yLabel: "GB",
    series,
    hlines: x.budgetGb > 0 ? [{ y: x.budgetGb, label: `budget ${x.budgetGb.toFixed(x.budgetGb < 1 ? 3 : 1)} GB`, color: "#c0392b" }] : [],
    markers: [
      { name: "swap-out", color: "#c0392b", xs: x.swapOutTimes, shape: "down" },
      { name: "swap-in", color: "#16a085", xs: x.swapInTimes, shape: "up" },
    ],
  });
}
