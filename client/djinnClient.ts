// Typed promise API over the generated grpc-js client for djinn.v1.Djinn.
// Shared by the exp3 driver, the debug adapter and the extension: no `vscode` import.
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { credentials, Metadata, status, type CallOptions, type ChannelCredentials, type ClientUnaryCall, type ServiceError } from "@grpc/grpc-js";
import {
  DjinnClient as GeneratedClient,
  CompleteRequest,
  CreateSessionRequest,
  EvaluateRequest,
  EventsRequest,
  GetTensorRequest,
  LogitLensRequest,
  SetBreakpointsRequest,
  SetDataBreakpointsRequest,
  SetTensorRequest,
  StepRequest,
  StepBackRequest,
  TelemetryRequest,
  type CompleteResponse,
  type DeepPartial,
  type DetachResponse,
  type EvaluateResponse,
  type Event,
  type ListSessionsResponse,
  type LogitLensResponse,
  type ServerInfo,
  type SessionInfo,
  type SetBreakpointsResponse,
  type SetDataBreakpointsResponse,
  type TensorChunk,
  type TensorList,
  type TensorSummary,
  type TelemetrySample,
} from "./generated/djinn/v1/djinn";
import { DjinnError, toDjinnError } from "./errors";
import { GrpcStream, type DjinnStream } from "./stream";

export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
export const TOKEN_METADATA_KEY = "x-djinn-token";
export const CLIENT_METADATA_KEY = "x-djinn-client";
/** What the server accepts as a client id (x-djinn-client). */
export const CLIENT_ID_RE = /^[A-Za-z0-9._:-]{1,64}$/;

/** Keepalive pings: a dead connection (a dropped SSH tunnel, a sleeping laptop) shows in seconds. */
export const KEEPALIVE_OPTIONS = {
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.keepalive_permit_without_calls": 1,
} as const;

export interface TlsOptions {
  /** PEM file of the CA (or the self-signed certificate) that signed the server's certificate; default: the system's roots. */
  caFile?: string;
  /** The name the server's certificate was issued for, when it differs from the address's host (e.g. through an SSH tunnel). */
  serverName?: string;
}

export interface DjinnClientOptions {
  /** Sent as gRPC metadata `x-djinn-token` on every call. */
  token?: string;
  /**
   * Sent as `x-djinn-client` on every call: breakpoints, presence and leases are per (user, client).
   * Default: a new random UUID per DjinnClient. At most 64 of [A-Za-z0-9._:-].
   */
  clientId?: string;
  /** Shorthand for `tls: { caFile }`. */
  caFile?: string;
  /** Connect with TLS (the server runs with --tls-cert/--tls-key); without it (and caFile) the channel is plain. */
  tls?: TlsOptions;
  /** Deadline of each unary call; 0 = none. Default 120 s. */
  deadlineMs?: number;
  /** Keepalive pings (KEEPALIVE_OPTIONS); default true. */
  keepalive?: boolean;
}

/** What Detach did; `emulated` when the server predates Detach (UNIMPLEMENTED) and the client did what it could itself. */
export interface DetachResult extends DetachResponse {
  emulated: boolean;
}

export interface DetachOptions {
  /** Also close the sessions this client created. */
  terminate: boolean;
  /**
   * For a server without Detach (UNIMPLEMENTED): the sessions to close with CloseSession when
   * terminating (the old behaviour: the caller closed what it created).
   */
  fallbackSessionIds?: number[];
  /** Deadline of the call (and of the fallback's calls); default the client's. */
  deadlineMs?: number;
}

/** A tensor (or a slice of it) reassembled from GetTensor's chunks. */
export interface FetchedTensor {
  summary: TensorSummary | undefined;
  sliceShape: number[];
  dtype: string;
  data: Buffer;
  chunks: number;
}

export type EventStream = DjinnStream<Event, "event">;
export type TelemetryStream = DjinnStream<TelemetrySample, "sample">;

type Callback<Res> = (error: ServiceError | null, response: Res) => void;
type UnaryFn<Req, Res> = (req: Req, md: Metadata, opts: Partial<CallOptions>, cb: Callback<Res>) => ClientUnaryCall;

/** The channel credentials and options of DjinnClientOptions (exported for tests). */
export function channelSetup(opts: DjinnClientOptions): { credentials: ChannelCredentials; options: Record<string, string | number>; tls: boolean } {
  const tls: TlsOptions | undefined = opts.tls || opts.caFile ? { ...opts.tls, caFile: opts.tls?.caFile ?? opts.caFile } : undefined;
  const options: Record<string, string | number> = {
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
  };
  if (opts.keepalive !== false) Object.assign(options, KEEPALIVE_OPTIONS);
  if (!tls) return { credentials: credentials.createInsecure(), options, tls: false };
  let ca: Buffer | undefined;
  if (tls.caFile) {
    try {
      ca = readFileSync(tls.caFile);
    } catch (e) {
      throw new DjinnError(status.INVALID_ARGUMENT, `cannot read the CA file ${tls.caFile}: ${(e as Error).message}`);
    }
  }
  if (tls.serverName) {
    options["grpc.ssl_target_name_override"] = tls.serverName;
    options["grpc.default_authority"] = tls.serverName;
  }
  return { credentials: credentials.createSsl(ca), options, tls: true };
}

export class DjinnClient {
  readonly address: string;
  /** x-djinn-client of every call. */
  readonly clientId: string;
  /** The channel uses TLS. */
  readonly tls: boolean;
  private readonly raw: GeneratedClient;
  private readonly token?: string;
  private readonly deadlineMs: number;

  constructor(address: string, opts: DjinnClientOptions = {}) {
    this.address = address;
    this.token = opts.token;
    this.deadlineMs = opts.deadlineMs ?? 120_000;
    const id = opts.clientId ?? randomUUID();
    if (!CLIENT_ID_RE.test(id)) {
      throw new DjinnError(status.INVALID_ARGUMENT, `client id ${JSON.stringify(id)}: at most 64 of [A-Za-z0-9._:-]`);
    }
    this.clientId = id;
    const setup = channelSetup(opts);
    this.tls = setup.tls;
    this.raw = new GeneratedClient(address, setup.credentials, setup.options);
  }

  // ------------------------------------------------------------ connection

  /** Resolves once the channel is connected; rejects with UNAVAILABLE after timeoutMs. */
  waitForReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.raw.waitForReady(Date.now() + timeoutMs, (err) => {
        if (!err) return resolve();
        reject(new DjinnError(status.UNAVAILABLE, `no Djinn server at ${this.address} after ${timeoutMs} ms: ${err.message}`));
      });
    });
  }

  close(): void {
    this.raw.close();
  }

  // ----------------------------------------------------------------- unary

  /** `deadlineMs`: this call's deadline instead of the client's (a quick liveness probe). */
  getInfo(deadlineMs?: number): Promise<ServerInfo> {
    return this.unary("getInfo", {}, deadlineMs);
  }

  createSession(req: DeepPartial<CreateSessionRequest>): Promise<SessionInfo> {
    return this.unary("createSession", CreateSessionRequest.fromPartial(req));
  }

  async listSessions(): Promise<SessionInfo[]> {
    const res: ListSessionsResponse = await this.unary("listSessions", {});
    return res.sessions;
  }

  getSession(sessionId: number): Promise<SessionInfo> {
    return this.unary("getSession", { sessionId });
  }

  closeSession(sessionId: number): Promise<SessionInfo> {
    return this.unary("closeSession", { sessionId });
  }

  setBreakpoints(req: DeepPartial<SetBreakpointsRequest>): Promise<SetBreakpointsResponse> {
    return this.unary("setBreakpoints", SetBreakpointsRequest.fromPartial(req));
  }

  continue(sessionId: number): Promise<SessionInfo> {
    return this.unary("continue", { sessionId });
  }

  step(req: DeepPartial<StepRequest>): Promise<SessionInfo> {
    return this.unary("step", StepRequest.fromPartial(req));
  }

  pause(sessionId: number): Promise<SessionInfo> {
    return this.unary("pause", { sessionId });
  }

  /**
   * A hint that this paused session will be continued soon: the server starts bringing its KV
   * back to the device now (its SWAP_IN event's text starts with "prefetch") and answers at once.
   * Already resident: nothing happens. Not paused: FAILED_PRECONDITION; no room without evicting
   * a running or just-prefetched session: RESOURCE_EXHAUSTED (a continue still brings it back).
   */
  prefetch(sessionId: number): Promise<SessionInfo> {
    return this.unary("prefetch", { sessionId });
  }

  /**
   * Time travel (a session created with `timeTravel`): back to the previous stop point of its
   * current pass, or (`to: STEP_BACK_TARGET_PREVIOUS_BREAKPOINT`) to the previous breakpoint of the
   * pass (its start when none). It stays paused there; a STOPPED event (STOP_REASON_STEP_BACK)
   * follows. Not paused, no history, or at the pass's start: FAILED_PRECONDITION.
   */
  stepBack(req: DeepPartial<StepBackRequest>): Promise<SessionInfo> {
    return this.unary("stepBack", StepBackRequest.fromPartial(req));
  }

  /** Time travel: back to layers.0 of the current pass (STOPPED, STOP_REASON_RESTART); refusals as stepBack. */
  restartPass(sessionId: number): Promise<SessionInfo> {
    return this.unary("restartPass", { sessionId });
  }

  listTensors(sessionId: number): Promise<TensorList> {
    return this.unary("listTensors", { sessionId });
  }

  setTensor(req: DeepPartial<SetTensorRequest>): Promise<TensorSummary> {
    return this.unary("setTensor", SetTensorRequest.fromPartial(req));
  }

  /** signal: aborting it cancels the call (the server drops it if the worker has not reached it). */
  evaluate(req: DeepPartial<EvaluateRequest>, signal?: AbortSignal): Promise<EvaluateResponse> {
    return this.unary("evaluate", EvaluateRequest.fromPartial(req), undefined, signal);
  }

  logitLens(req: DeepPartial<LogitLensRequest>): Promise<LogitLensResponse> {
    return this.unary("logitLens", LogitLensRequest.fromPartial(req));
  }

  /**
   * Completions of the word before `column` (1-based UTF-16, as DAP's default; 0 = end of text):
   * tensor names at the session's stop, its $N results and scalars, keyword arguments, functions
   * with signatures. `start`/`length` (0-based UTF-16) say what every item replaces. sessionId 0:
   * functions and keywords only. No tensor is computed; any session state works.
   */
  complete(req: DeepPartial<CompleteRequest>): Promise<CompleteResponse> {
    return this.unary("complete", CompleteRequest.fromPartial(req));
  }

  /**
   * Replaces this client's data breakpoints of a session: each stops where its condition over its
   * tensor becomes true (stop reason DATA_BREAKPOINT, hit ids = these ids). Anything invalid is
   * INVALID_ARGUMENT naming the data breakpoint, and nothing changes. An empty list clears them.
   */
  setDataBreakpoints(req: DeepPartial<SetDataBreakpointsRequest>): Promise<SetDataBreakpointsResponse> {
    return this.unary("setDataBreakpoints", SetDataBreakpointsRequest.fromPartial(req));
  }

  /**
   * This client leaves: the server removes its breakpoints from every session and, with
   * `terminate`, closes the sessions it created (never another client's). A server without
   * Detach (UNIMPLEMENTED) gets the old behaviour: with `terminate`, the client closes
   * `fallbackSessionIds` itself (sessions already gone are skipped).
   */
  async detach(opts: DetachOptions | boolean): Promise<DetachResult> {
    const o: DetachOptions = typeof opts === "boolean" ? { terminate: opts } : opts;
    const deadlineMs = o.deadlineMs ?? this.deadlineMs;
    try {
      const r: DetachResponse = await this.unary("detach", { terminate: o.terminate }, deadlineMs);
      return { ...r, emulated: false };
    } catch (e) {
      if ((e as DjinnError).code !== status.UNIMPLEMENTED) throw e;
    }
    const closed: number[] = [];
    if (o.terminate) {
      await Promise.all(
        (o.fallbackSessionIds ?? []).map(async (id) => {
          try {
            await this.unary("closeSession", { sessionId: id }, deadlineMs);
            closed.push(id);
          } catch (e) {
            if ((e as DjinnError).code !== status.NOT_FOUND) throw e;
          }
        }),
      );
    }
    return { closedSessionIds: closed.sort((a, b) => a - b), breakpointsRemoved: 0, emulated: true };
  }

  // --------------------------------------------------------------- tensors

  /** Streams a tensor (or slice) and reassembles its chunks into one Buffer. */
  getTensor(req: DeepPartial<GetTensorRequest>, signal?: AbortSignal): Promise<FetchedTensor> {
    const call = this.raw.getTensor(GetTensorRequest.fromPartial(req), this.metadata(), this.callOptions());
    cancelOn(signal, () => call.cancel());
    return new Promise((resolve, reject) => {
      let first: TensorChunk | undefined;
      let data = Buffer.alloc(0);
      let received = 0;
      let chunks = 0;
      call.on("data", (chunk: TensorChunk) => {
        chunks++;
        if (!first) {
          first = chunk;
          data = Buffer.alloc(chunk.totalBytes);
        }
        const end = chunk.offset + chunk.data.length;
        if (end > data.length) {
          call.cancel();
          reject(new DjinnError(status.DATA_LOSS, `GetTensor chunk [${chunk.offset}, ${end}) beyond total_bytes ${data.length}`));
          return;
        }
        chunk.data.copy(data, chunk.offset);
        received += chunk.data.length;
      });
      call.on("error", (e) => reject(toDjinnError(e, "getTensor")));
      call.on("end", () => {
        if (!first) return reject(new DjinnError(status.DATA_LOSS, "GetTensor returned no chunk"));
        if (received !== data.length) {
          return reject(new DjinnError(status.DATA_LOSS, `GetTensor received ${received} of ${data.length} bytes`));
        }
        resolve({ summary: first.summary, sliceShape: first.sliceShape, dtype: first.dtype, data, chunks });
      });
    });
  }

  /** Statistics only (dtype, shape, min/max/mean/std...), no data. */
  async getTensorSummary(sessionId: number, name: string): Promise<TensorSummary> {
    const t = await this.getTensor({ sessionId, name, summaryOnly: true });
    if (!t.summary) throw new DjinnError(status.INTERNAL, `GetTensor(${name}) returned no summary`);
    return t.summary;
  }

  // --------------------------------------------------------------- streams

  events(req: DeepPartial<EventsRequest> = {}): EventStream {
    // Streams live as long as the caller wants: no deadline.
    const call = this.raw.events(EventsRequest.fromPartial(req), this.metadata(), {});
    return new GrpcStream(call, "event", "events");
  }

  telemetry(req: DeepPartial<TelemetryRequest> = {}): TelemetryStream {
    const call = this.raw.telemetry(TelemetryRequest.fromPartial(req), this.metadata(), {});
    return new GrpcStream(call, "sample", "telemetry");
  }

  // -------------------------------------------------------------- plumbing

  private metadata(): Metadata {
    const md = new Metadata();
    if (this.token) md.set(TOKEN_METADATA_KEY, this.token);
    md.set(CLIENT_METADATA_KEY, this.clientId);
    return md;
  }

  private callOptions(deadlineMs = this.deadlineMs): Partial<CallOptions> {
    return deadlineMs > 0 ? { deadline: Date.now() + deadlineMs } : {};
  }

  private unary<Res>(method: keyof GeneratedClient & string, req: object, deadlineMs?: number, signal?: AbortSignal): Promise<Res> {
    const fn = (this.raw[method] as unknown as UnaryFn<object, Res>).bind(this.raw);
    return new Promise((resolve, reject) => {
      const call = fn(req, this.metadata(), this.callOptions(deadlineMs), (err, res) => (err ? reject(toDjinnError(err, method)) : resolve(res)));
      cancelOn(signal, () => call.cancel());
    });
  }
}

/** Runs `cancel` when `signal` aborts (at once if it already has). */
function cancelOn(signal: AbortSignal | undefined, cancel: () => void): void {
  if (!signal) return;
  if (signal.aborted) cancel();
  else signal.addEventListener("abort", cancel, { once: true });
}
