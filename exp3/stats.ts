// Summary statistics for the results file.

export function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

/** Linear-interpolated percentile, p in [0, 100]. */
export function percentile(xs: number[], p: number): number {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const pos = ((s.length - 1) * p) / 100;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

export function minMaxAvg(xs: number[]): { min: number; max: number; avg: number } {
  if (!xs.length) return { min: 0, max: 0, avg: 0 };
  let min = Infinity;
  let max = -Infinity;
  for (const x of xs) {
    if (x < min) min = x;
    if (x > max) max = x;
  }
  return { min, max, avg: mean(xs) };
}

export function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/**
 * At most maxPoints items, keeping per bucket the one with the largest key(),
 * so peaks survive downsampling.
 */
export function downsampleMax<T>(items: T[], maxPoints: number, key: (t: T) => number): T[] {
  if (items.length <= maxPoints) return items;
  const size = items.length / maxPoints;
  const out: T[] = [];
  for (let b = 0; b < maxPoints; b++) {
    const start = Math.floor(b * size);
    const end = Math.min(items.length, Math.floor((b + 1) * size));
    let best = items[start];
    for (let i = start + 1; i < end; i++) if (key(items[i]) > key(best)) best = items[i];
    out.push(best);
  }
  return out;
}
