// Public surface of the Djinn client library.
export * from "./djinnClient";
export * from "./errors";
export * from "./format";
export * from "./localServer";
export { serverEnv } from "./python";
export type { DjinnStream } from "./stream";
export * from "./resilientStream";
// Messages and enums of the wire contract (not the generated grpc client: use DjinnClient above).
export {
  EventKind,
  KvLocation,
  Phase,
  SessionState,
  StepKind,
  StepBackTarget,
  StopPoint,
  StopReason,
  WriteMode,
  eventKindToJSON,
  kvLocationToJSON,
  phaseToJSON,
  sessionStateToJSON,
  stopPointToJSON,
  stopReasonToJSON,
} from "./generated/djinn/v1/djinn";
export type {
  Breakpoint,
  BreakpointStatus,
  CompleteResponse,
  CompletionItem,
  CreateSessionRequest,
  DataBreakpoint,
  DataBreakpointStatus,
  DimSlice,
  EvaluateResponse,
  Event,
  GetTensorRequest,
  HistoryInfo,
  LogitLensResponse,
  MemoryInfo,
  ModelConfig,
  ModuleNode,
  Position,
  ServerInfo,
  SessionInfo,
  SessionMemory,
  SetDataBreakpointsResponse,
  SetTensorRequest,
  TelemetrySample,
  TensorChunk,
  TensorList,
  TensorSummary,
  TokenProb,
  Traps,
} from "./generated/djinn/v1/djinn";
