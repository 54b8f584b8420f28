// Buffers a Djinn event stream so a test can await "the next event matching X".
import type { Event, EventStream } from "../../client";

export class EventWaiter {
  private readonly seen: Event[] = [];
  private waiters: Array<{ match: (e: Event) => boolean; resolve: (e: Event) => void }> = [];
  private error?: Error;

  constructor(readonly stream: EventStream) {
    stream.on("event", (e) => {
      const w = this.waiters.find((x) => x.match(e));
      if (w) {
        this.waiters = this.waiters.filter((x) => x !== w);
        w.resolve(e);
      } else {
        this.seen.push(e);
      }
    });
    stream.on("error", (e) => (this.error = e));
  }

  /** The first buffered or future event that matches (buffered ones are consumed). */
  next(match: (e: Event) => boolean, timeoutMs = 60_000): Promise<Event> {
    if (this.error) return Promise.reject(this.error);
    const i = this.seen.findIndex(match);
    if (i >= 0) return Promise.resolve(this.seen.splice(i, 1)[0]);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching event within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({ match, resolve: (e) => (clearTimeout(timer), resolve(e)) });
    });
  }
}
