// A server stream (Events, Telemetry) as a small typed emitter: on(kind, ...),
// on('error'), on('end'), cancel(). Cancelling ends the stream quietly.
import { EventEmitter } from "node:events";
import { status, type ClientReadableStream } from "@grpc/grpc-js";
import { DjinnError, toDjinnError } from "./errors";

export interface DjinnStream<T, K extends string> {
  on(event: K, listener: (message: T) => void): this;
  on(event: "error", listener: (error: DjinnError) => void): this;
  on(event: "end", listener: () => void): this;
  once(event: K, listener: (message: T) => void): this;
  once(event: "error", listener: (error: DjinnError) => void): this;
  once(event: "end", listener: () => void): this;
  off(event: string, listener: (...args: any[]) => void): this;
  /** Stops the stream; 'end' follows, never 'error'. */
  cancel(): void;
  readonly ended: boolean;
}

export class GrpcStream<T, K extends string> extends EventEmitter implements DjinnStream<T, K> {
  private cancelled = false;
  private _ended = false;

  constructor(private readonly call: ClientReadableStream<T>, messageEvent: K, method: string) {
    super();
    call.on("data", (m: T) => this.emit(messageEvent, m));
    call.on("error", (e) => {
      const err = toDjinnError(e, method);
      if (this.cancelled && err.code === status.CANCELLED) return this.finish();
      // Without an 'error' listener EventEmitter would throw; a stream nobody watches fails silently.
      if (this.listenerCount("error") > 0) this.emit("error", err);
      this.finish();
    });
    call.on("end", () => this.finish());
  }

  get ended(): boolean {
    return this._ended;
  }

  cancel(): void {
    if (this._ended) return;
    this.cancelled = true;
    this.call.cancel();
  }

  private finish(): void {
    if (this._ended) return;
    this._ended = true;
    this.emit("end");
  }
}
