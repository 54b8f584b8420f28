// gRPC failures as one typed error, so callers can switch on `codeName`
// without importing grpc-js.
import { status, type ServiceError } from "@grpc/grpc-js";

const CODE_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(status)
    .filter(([, v]) => typeof v === "number")
    .map(([k, v]) => [v as number, k]),
);

export function grpcCodeName(code: number): string {
  return CODE_NAMES[code] ?? `CODE_${code}`;
}

export class DjinnError extends Error {
  readonly code: number;
  readonly codeName: string;
  /** The server's own message (grpc `details`). */
  readonly details: string;

  constructor(code: number, details: string, method?: string) {
    const codeName = grpcCodeName(code);
    super(`${method ? `${method}: ` : ""}${codeName}: ${details}`);
    this.name = "DjinnError";
    this.code = code;
    this.codeName = codeName;
    this.details = details;
  }
}

function isServiceError(e: unknown): e is ServiceError {
  return typeof e === "object" && e !== null && typeof (e as ServiceError).code === "number";
}

/** Any error thrown around a call, as a DjinnError (non-gRPC errors become UNKNOWN). */
export function toDjinnError(e: unknown, method?: string): DjinnError {
  if (e instanceof DjinnError) return e;
  if (isServiceError(e)) return new DjinnError(e.code, e.details || e.message, method);
  const message = e instanceof Error ? e.message : String(e);
  return new DjinnError(status.UNKNOWN, message, method);
}
