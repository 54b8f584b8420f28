// DAP `cancel`: a long request (a launch while the model loads, a big tensor slice, an
// Evaluate) can be cancelled by its request seq, or through the progress it started. The
// request then answers at once with an error whose message is "cancelled" (as DAP asks). Its
// gRPC calls see the request's AbortSignal (`currentSignal`, carried by AsyncLocalStorage so that
// the layers between need not pass it): a cancelled Evaluate or slice is cancelled on the wire,
// and the server drops it if its worker has not reached it yet. A launch's
// local server is stopped at once, while it is still loading the model too (an AbortSignal
// given to the client library's startLocalServer).

import { AsyncLocalStorage } from "node:async_hooks";

const ambient = new AsyncLocalStorage<AbortSignal>();

/** The AbortSignal of the cancellable request whose work is running now, if any. */
export function currentSignal(): AbortSignal | undefined {
  return ambient.getStore();
}

export class CancelledError extends Error {
  constructor() {
    super("cancelled");
    this.name = "CancelledError";
  }
}

interface Pending {
  cancelled: boolean;
  abort: AbortController;
  reject: (e: Error) => void;
  onCancel?: () => void;
}

export class Cancellations {
  private readonly pending = new Map<number, Pending>();
  /** progress id -> the request it belongs to */
  private readonly progress = new Map<string, number>();

  /**
   * Runs `work` for request `seq`: its promise, unless `cancel(seq)` comes first, which rejects
   * with CancelledError (and calls `onCancel`).
   */
  run<T>(seq: number, work: () => Promise<T>, onCancel?: () => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const p: Pending = { cancelled: false, abort: new AbortController(), reject, onCancel };
      this.pending.set(seq, p);
      const done = () => {
        if (this.pending.get(seq) === p) this.pending.delete(seq);
        for (const [id, r] of this.progress) if (r === seq) this.progress.delete(id);
      };
      ambient.run(p.abort.signal, work).then(
        (v) => (done(), p.cancelled ? undefined : resolve(v)),
        (e) => (done(), p.cancelled ? undefined : reject(e)),
      );
    });
  }

  /** Progress `id` shows the work of request `seq`: cancelling the progress cancels it. */
  linkProgress(id: string, seq: number): boolean {
    if (!this.pending.has(seq)) return false;
    this.progress.set(id, seq);
    return true;
  }

  /** The request a progress belongs to, when it can still be cancelled. */
  requestOf(progressId: string): number | undefined {
    return this.progress.get(progressId);
  }

  /** Cancels request `seq` if it is still running; false when there is nothing to cancel. */
  cancel(seq: number): boolean {
    const p = this.pending.get(seq);
    if (!p || p.cancelled) return false;
    p.cancelled = true;
    this.pending.delete(seq);
    p.reject(new CancelledError());
    p.abort.abort();
    try {
      p.onCancel?.();
    } catch {
      /* cancelling must not fail */
    }
    return true;
  }

  /** Is request `seq` still running (and so cancellable)? */
  running(seq: number): boolean {
    return this.pending.has(seq);
  }
}
