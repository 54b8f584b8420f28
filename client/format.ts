// Small display helpers shared by the CLI, the debug adapter and the panels.
import { StopPoint, type Position } from "./generated/djinn/v1/djinn";

const UNITS = ["B", "KB", "MB", "GB", "TB"];

/** Decimal units (1 GB = 1e9 B), like the budget flags and the results file. */
export function fmtBytes(bytes: number, digits = 1): string {
  if (!Number.isFinite(bytes)) return String(bytes);
  let value = Math.abs(bytes);
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit++;
  }
  const sign = bytes < 0 ? "-" : "";
  return unit === 0 ? `${sign}${value} B` : `${sign}${value.toFixed(digits)} ${UNITS[unit]}`;
}

export const GB = 1e9;

export function toGb(bytes: number): number {
  return bytes / GB;
}

/** Module name of a stop point: "layers.20", "layers.20.attn", "layers.20.mlp". */
export function stopPointName(layer: number, point: StopPoint = StopPoint.STOP_POINT_LAYER): string {
  switch (point) {
    case StopPoint.STOP_POINT_ATTN:
      return `layers.${layer}.attn`;
    case StopPoint.STOP_POINT_MLP:
      return `layers.${layer}.mlp`;
    default:
      return `layers.${layer}`;
  }
}

export function positionName(p: Position | undefined): string {
  return p ? stopPointName(p.layer, p.point) : "?";
}
