// Typed promise API over the generated grpc-js client for djinn.v1.Djinn.
// Shared by the exp3 driver, the debug adapter and the extension: no `vscode` import.
import { credentials, Metadata, status, type CallOptions, type ClientUnaryCall, type ServiceError } from "@grpc/grpc-js";
import {
  DjinnClient as GeneratedClient,
  CreateSessionRequest,
  EvaluateRequest,
  EventsRequest,
  GetTensorRequest,
  LogitLensRequest,
  SetBreakpointsRequest,
  SetTensorRequest,
  StepRequest,
  TelemetryRequest,
  type DeepPartial,
  type EvaluateResponse,
  type Event,
  type ListSessionsResponse,
  type LogitLensResponse,
  type ServerInfo,
  type SessionInfo,
  type SetBreakpointsResponse,
  type TensorChunk,
  type TensorList,
  type TensorSummary,
  type TelemetrySample,
} from "./generated/djinn/v1/djinn";
import { DjinnError, toDjinnError } from "./errors";
import { GrpcStream, type DjinnStream } from "./stream";

export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
export const TOKEN_METADATA_KEY = "x-djinn-token";

export interface DjinnClientOptions {
  /** Sent as gRPC metadata `x-djinn-token` on every call. */
  token?: string;
  /** Deadline of each unary call; 0 = none. Default 120 s. */
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

export class DjinnClient {
  readonly address: string;
  private readonly raw: GeneratedClient;
  private readonly token?: string;
  private readonly deadlineMs: number;

  constructor(address: string, opts: DjinnClientOptions = {}) {
    this.address = address;
    this.token = opts.token;
    this.deadlineMs = opts.deadlineMs ?? 120_000;
    this.raw = new GeneratedClient(address, credentials.createInsecure(), {
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    });
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

  getInfo(): Promise<ServerInfo> {
    return this.unary("getInfo", {});
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

  listTensors(sessionId: number): Promise<TensorList> {
    return this.unary("listTensors", { sessionId });
  }

  setTensor(req: DeepPartial<SetTensorRequest>): Promise<TensorSummary> {
    return this.unary("setTensor", SetTensorRequest.fromPartial(req));
  }

  evaluate(req: DeepPartial<EvaluateRequest>): Promise<EvaluateResponse> {
    return this.unary("evaluate", EvaluateRequest.fromPartial(req));
  }

  logitLens(req: DeepPartial<LogitLensRequest>): Promise<LogitLensResponse> {
    return this.unary("logitLens", LogitLensRequest.fromPartial(req));
  }

  // --------------------------------------------------------------- tensors

  /** Streams a tensor (or slice) and reassembles its chunks into one Buffer. */
  getTensor(req: DeepPartial<GetTensorRequest>): Promise<FetchedTensor> {
    const call = this.raw.getTensor(GetTensorRequest.fromPartial(req), this.metadata(), this.callOptions());
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
    return md;
  }

  private callOptions(): Partial<CallOptions> {
    return this.deadlineMs > 0 ? { deadline: Date.now() + this.deadlineMs } : {};
  }

  private unary<Res>(method: keyof GeneratedClient & string, req: object): Promise<Res> {
    const fn = (this.raw[method] as unknown as UnaryFn<object, Res>).bind(this.raw);
    return new Promise((resolve, reject) => {
      fn(req, this.metadata(), this.callOptions(), (err, res) => (err ? reject(toDjinnError(err, method)) : resolve(res)));
    });
  }
}
