// FIFO of paused sessions waiting for their "think time" to pass before Exp 3
// continues them, one at a time, in the order they stopped.

interface Entry {
  id: number;
  readyAt: number;
}

export class ContinueQueue {
  private entries: Entry[] = [];

  push(id: number, readyAt: number): void {
    if (!this.has(id)) this.entries.push({ id, readyAt });
  }

  has(id: number): boolean {
    return this.entries.some((e) => e.id === id);
  }

  remove(id: number): void {
    this.entries = this.entries.filter((e) => e.id !== id);
  }

  /** The oldest entry whose think time has passed (FIFO: it waits for those ahead of it). */
  popReady(now: number): number | undefined {
    const head = this.entries[0];
    if (!head || head.readyAt > now) return undefined;
    this.entries.shift();
    return head.id;
  }

  get length(): number {
    return this.entries.length;
  }
}
