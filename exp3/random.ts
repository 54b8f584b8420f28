// Deterministic pseudo-random numbers (mulberry32), so prompts and think-time
// jitter are the same on every run with the same seed.

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `length` token ids in [3, vocab - 1): ids 0-2 are usually special (pad, bos, eos). */
export function promptTokens(seed: number, length: number, vocabSize: number): number[] {
  const lo = 3;
  const hi = vocabSize - 1;
  if (hi <= lo) throw new Error(`vocab size ${vocabSize} too small for random prompts`);
  const rand = mulberry32(seed);
  return Array.from({ length }, () => lo + Math.floor(rand() * (hi - lo)));
}

/** base scaled by a factor in [0.5, 1.5). */
export function jitter(rand: () => number, base: number): number {
  return base * (0.5 + rand());
}
