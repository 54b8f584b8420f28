// Variables of a paused session: scopes, tensors as lazily paged variables, writes
// (steering), evaluate results and raw memory. Tensor values shown in one line are the
// server's statistics; children are fetched a page (one slice request) at a time, never a
// whole large tensor. References belong to one stop of one session and die when it resumes.
import type { DebugProtocol } from "@vscode/debugprotocol";
import {
  KvLocation,
  StopPoint,
  StopReason,
  type DimSlice,
  type DjinnRuntime,
  type RtSession,
  type TensorSummary,
} from "./runtime";
import { Phase, type EvaluateResponse } from "../client";
import { isStopTarget, moduleToStop } from "./outline";
import type { FrameKind } from "./stack";
import { historyLine } from "./timeTravel";

// ------------------------------------------------------------------ dtypes

const SHORT: Record<string, string> = {
  bfloat16: "bf16", float16: "f16", float32: "f32", float64: "f64", int8: "i8", int16: "i16",
  int32: "i32", int64: "i64", uint8: "u8", bool: "bool",
};
const SIZE: Record<string, number> = {
  bfloat16: 2, float16: 2, float32: 4, float64: 8, int8: 1, int16: 2, int32: 4, int64: 8, uint8: 1, bool: 1,
};

export function shortDtype(dtype: string): string {
  return SHORT[dtype] ?? dtype;
}

export function elementSize(dtype: string): number {
  const n = SIZE[dtype];
  if (!n) throw new Error(`unsupported dtype '${dtype}'`);
  return n;
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/** Little-endian elements of `dtype` as JS numbers (int64 beyond 2^53 loses precision). */
export function decode(data: Buffer, dtype: string): number[] {
  const n = data.length / elementSize(dtype);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    switch (dtype) {
      case "float32": out[i] = data.readFloatLE(i * 4); break;
      case "float64": out[i] = data.readDoubleLE(i * 8); break;
      case "bfloat16": {
        const b = Buffer.alloc(4);
        b.writeUInt16LE(data.readUInt16LE(i * 2), 2);
        out[i] = b.readFloatLE(0);
        break;
      }
      case "float16": out[i] = halfToFloat(data.readUInt16LE(i * 2)); break;
      case "int8": out[i] = data.readInt8(i); break;
      case "uint8": out[i] = data.readUInt8(i); break;
      case "bool": out[i] = data.readUInt8(i) ? 1 : 0; break;
      case "int16": out[i] = data.readInt16LE(i * 2); break;
      case "int32": out[i] = data.readInt32LE(i * 4); break;
      case "int64": out[i] = Number(data.readBigInt64LE(i * 8)); break;
      default: throw new Error(`unsupported dtype '${dtype}'`);
    }
  }
  return out;
}

function floatToHalf(v: number): number {
  const f32 = new Float32Array([v]);
  const x = new Uint32Array(f32.buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant = (mant | 0x800000) >> (1 - e);
    return sign | ((mant + 0x1000) >> 13);
  }
  const h = sign | (e << 10) | (mant >> 13);
  return mant & 0x1000 ? h + 1 : h; // round half up (overflow carries into the exponent correctly)
}

/** JS numbers as little-endian elements of a floating `dtype` (for writes from expressions). */
export function encode(values: number[], dtype: string): Buffer {
  const size = elementSize(dtype);
  const out = Buffer.alloc(values.length * size);
  values.forEach((v, i) => {
    switch (dtype) {
      case "float32": out.writeFloatLE(v, i * 4); break;
      case "float64": out.writeDoubleLE(v, i * 8); break;
      case "bfloat16": {
        const b = Buffer.alloc(4);
        b.writeFloatLE(v, 0);
        const bits = b.readUInt32LE(0);
        const rounded = Number.isNaN(v) ? 0x7fc0 : ((bits + 0x7fff + ((bits >> 16) & 1)) >>> 16) & 0xffff;
        out.writeUInt16LE(rounded, i * 2);
        break;
      }
      case "float16": out.writeUInt16LE(floatToHalf(v), i * 2); break;
      default: throw new Error(`writing ${dtype} from an expression is not supported; write a number instead`);
    }
  });
  return out;
}

// -------------------------------------------------------------- formatting

/** Python's `format(x, '.Ng')`. */
export function fmtG(x: number, digits = 4): string {
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0" : "0";
  let [m, e] = x.toExponential(digits - 1).split("e");
  // JS rounds exact ties away from zero, Python to even (format(1234.5, '.4g') is '1234').
  const [mant, exp10] = Math.abs(x).toExponential(Math.min(100, digits + 24)).split("e");
  const ds = mant.replace(".", "");
  if (ds[digits] === "5" && /^0*$/.test(ds.slice(digits + 1))) {
    let kept = BigInt(ds.slice(0, digits));
    if (kept % 2n === 1n) kept += 1n;
    [m, e] = Number(`${x < 0 ? "-" : ""}${kept}e${Number(exp10) - (digits - 1)}`).toExponential(digits - 1).split("e");
  }
  const exp = Number(e);
  const strip = (s: string) => (s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s);
  if (exp < -4 || exp >= digits) {
    const ae = Math.abs(exp);
    return `${strip(m)}e${exp < 0 ? "-" : "+"}${ae < 10 ? "0" : ""}${ae}`;
  }
  return strip(Number(`${m}e${e}`).toFixed(Math.max(digits - 1 - exp, 0)));
}

function numelOf(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * The value line of a tensor: "bf16[1, 2048, 5120] μ=… σ=… min=… max=… ‖x‖=… nan=0"; a small
 * tensor whose elements the server sent (`values`, numel <= 16) shows them instead, nested like
 * its shape ("f32[5] [0.1, 0.2, …]", "i64[1] [457]", "f32[2, 2] [[1, 0.5], [nan, -inf]]", the
 * server's own format); a tensor without elements is "f32[2, 0, 32] empty".
 */
export function summaryLine(s: TensorSummary): string {
  const head = `${shortDtype(s.dtype)}[${s.shape.join(", ")}]`;
  const numel = numelOf(s.shape);
  if (numel === 0) return `${head} empty`;
  if (s.values?.length && s.values.length === numel) return `${head} ${formatValues(s.values, s.shape, s.dtype)}`;
  const g = (v: number) => fmtG(v, 4);
  const base = `${head} μ=${g(s.mean)} σ=${g(s.std)} min=${g(s.min)} max=${g(s.max)} ‖x‖=${g(s.l2Norm)} nan=${s.nanCount}`;
  return s.infCount ? `${base} inf=${s.infCount}` : base;
}

/** Elements in C order as nested lists of `shape` (Python's repr of t.tolist()); a 0-d tensor is its value. */
export function formatValues(values: number[], shape: number[], dtype: string): string {
  let items = values.map((v) => fmtValue(v, dtype));
  for (const size of shape.slice(1).reverse()) {
    const rows: string[] = [];
    for (let i = 0; i < items.length; i += size) rows.push(`[${items.slice(i, i + size).join(", ")}]`);
    items = rows;
  }
  return shape.length ? `[${items.join(", ")}]` : items[0];
}

export function fmtValue(v: number, dtype: string): string {
  if (dtype === "bool") return v ? "true" : "false";
  if (!dtype.startsWith("float") && !dtype.startsWith("bfloat") && Number.isInteger(v)) return String(v);
  return fmtG(v, 6);
}

function fmtBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(3)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} KB`;
  return `${n} B`;
}

export function kvLocationName(k: KvLocation): string {
  switch (k) {
    case KvLocation.KV_LOCATION_DEVICE: return "resident (device)";
    case KvLocation.KV_LOCATION_HOST: return "on host (swapped out)";
    case KvLocation.KV_LOCATION_MOVING_OUT: return "moving to host";
    case KvLocation.KV_LOCATION_MOVING_IN: return "moving to device";
    case KvLocation.KV_LOCATION_DISK: return "on disk (spilled)";
    case KvLocation.KV_LOCATION_MOVING_TO_DISK: return "moving to disk";
    case KvLocation.KV_LOCATION_MOVING_FROM_DISK: return "moving from disk";
    case KvLocation.KV_LOCATION_NONE: return "none (not allocated)";
    default: return "unknown";
  }
}

export function pointName(p: StopPoint): string {
  return p === StopPoint.STOP_POINT_ATTN ? "after attention" : p === StopPoint.STOP_POINT_MLP ? "after MLP" : "before the layer";
}

// ------------------------------------------------------------ containers

/** A region of a tensor: `prefix` fixes the leading indices; `shape` is the whole tensor's. */
export interface TensorTarget {
  sessionId: number;
  name: string;
  prefix: number[];
  shape: number[];
  dtype: string;
  writable: boolean;
}

type Container =
  | { kind: "activations"; sessionId: number }
  | { kind: "kv"; sessionId: number }
  | { kind: "session"; sessionId: number }
  | { kind: "lens"; sessionId: number }
  | { kind: "layer"; sessionId: number }
  | { kind: "pass"; sessionId: number }
  | { kind: "memory"; sessionId: number }
  | { kind: "tensor"; sessionId: number; target: TensorTarget }
  | { kind: "lazyTensor"; sessionId: number; name: string }
  | { kind: "static"; sessionId: number; items: DebugProtocol.Variable[] }
  /** a module of the model (or a group such as `layers`): not tied to a session or a stop */
  | { kind: "module"; sessionId: number; name: string };

/** Where a module's line is in the outline the frames point at (file name and line), when known. */
export type OutlineLookup = (module: string) => { file: string; line: number } | undefined;

/**
 * The context VS Code gives the variables' context menu (`debugProtocolVariableMenuContext`):
 * every tensor variable has one (View Tensor), a writable multi-element tensor in VS Code the
 * second (View Tensor and the extension's own Set Value…).
 */
export const TENSOR_MENU_CONTEXT = "tensor";
export const WRITABLE_TENSOR_MENU_CONTEXT = "djinnTensor";
/** references of earlier stops remembered (to answer them with a clear error) */
const OLD_REFS_KEPT = 50_000;

export const DEFAULT_PAGE = 1000;
/** Tensor names a stop may offer (docs: README "Tensors at a stop"); others are scalars or unknown. */
const CATALOG = new Set(["hidden", "attn_out", "mlp_out", "q", "k", "v", "k_cache", "v_cache", "logits", "tokens"]);
const PREVIEW = 6;
const LENS_TOP_K = 10;
/** the KV cache scope's lines that say where the memory is (the rest are this layer's k/v caches) */
const MEMORY_ITEMS = 7;
/** tensors of the pass, not of the layer it stopped in */
const PASS_TENSORS = new Set(["tokens", "logits"]);
const MAX_READ = 1 << 20;
const MAX_EXPR_WRITE = 64 << 20;

export class VariableError extends Error {}

function regionOf(t: TensorTarget): DimSlice[] {
  return t.prefix.map((i) => ({ start: i, stop: i + 1, step: 0 }));
}

function exprOf(t: TensorTarget): string {
  return t.prefix.length ? `${t.name}[${t.prefix.join(", ")}]` : t.name;
}

const NUMBER = /^\s*[-+]?((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|inf|infinity|nan)\s*$/i;

function parseNumber(text: string): number | undefined {
  if (!NUMBER.test(text)) return undefined;
  const t = text.trim().toLowerCase();
  if (t.endsWith("nan")) return NaN;
  if (t.endsWith("inf") || t.endsWith("infinity")) return t.startsWith("-") ? -Infinity : Infinity;
  return Number(t);
}

/**
 * `name` or `name[i, a:b, :, -1]` (the subset of the expression language that names a
 * writable region) -> tensor name and DimSlices. Integers keep their dim (size 1).
 */
export function parseRegion(expression: string): { name: string; slice: DimSlice[] } | undefined {
  const m = /^\s*(\$?[A-Za-z_0-9]+)\s*(?:\[(.*)\])?\s*$/.exec(expression);
  if (!m) return undefined;
  const slice: DimSlice[] = [];
  if (m[2] !== undefined) {
    for (const raw of m[2].split(",")) {
      const item = raw.trim();
      const int = /^-?\d+$/;
      if (int.test(item)) {
        const i = Number(item);
        slice.push(i === -1 ? { start: -1, stop: 0, step: 0 } : { start: i, stop: i + 1, step: 0 });
        continue;
      }
      const sm = /^(-?\d+)?\s*:\s*(-?\d+)?(?:\s*:\s*(\d+)?)?$/.exec(item);
      if (!sm) return undefined;
      const start = sm[1] !== undefined ? Number(sm[1]) : 0;
      if (sm[2] !== undefined && Number(sm[2]) === 0) return undefined; // x[:0] is empty
      const stop = sm[2] !== undefined ? Number(sm[2]) : 0;
      const step = sm[3] !== undefined ? Number(sm[3]) : 0;
      slice.push({ start, stop, step });
    }
  }
  return { name: m[1], slice };
}

export interface WriteResult {
  value: string;
  type?: string;
  variablesReference: number;
  indexedVariables?: number;
  memoryReference?: string;
}

export class VariableStore {
  private readonly refs = new Map<number, { c: Container; epoch: number }>();
  private readonly bySession = new Map<number, number[]>();
  private readonly memRefs = new Map<string, { t: TensorTarget; epoch: number }>();
  /** references of earlier stops -> their session (bounded) */
  private readonly oldRefs = new Map<number, number>();
  /** module name -> its reference (modules do not change while the server runs) */
  private readonly moduleRefs = new Map<string, number>();
  private next = 1;
  private nextMem = 1;
  /**
   * The client is VS Code: writable multi-element tensors are marked readOnly (VS Code's own
   * Set Value would pre-fill the statistics line) and get the menu context TENSOR_MENU_CONTEXT,
   * where the extension offers its own Set Value (a setExpression of the evaluateName).
   */
  forVsCode = false;
  /** the outline line of a module, for the "break" hint of module variables */
  outline?: OutlineLookup;

  constructor(private readonly rt: DjinnRuntime) {}

  /** Drops every reference into a session's previous stop (kept only to be refused clearly). */
  invalidate(sessionId: number): void {
    for (const ref of this.bySession.get(sessionId) ?? []) {
      this.refs.delete(ref);
      this.oldRefs.set(ref, sessionId);
    }
    this.bySession.delete(sessionId);
    for (const ref of this.oldRefs.keys()) {
      if (this.oldRefs.size <= OLD_REFS_KEPT) break;
      this.oldRefs.delete(ref);
    }
    for (const [k, v] of this.memRefs) if (v.t.sessionId === sessionId) this.memRefs.delete(k);
  }

  /** The presentation of a tensor variable of `numel` elements (see forVsCode). */
  private tensorHint(v: DebugProtocol.Variable, writable: boolean, numel: number, lazy = false): DebugProtocol.Variable {
    const readOnly = !writable || (this.forVsCode && numel > 1);
    v.presentationHint = { kind: "data", ...(lazy ? { lazy: true } : {}), attributes: readOnly ? ["readOnly"] : [] };
    // VS Code's context key debugProtocolVariableMenuContext: View Tensor is offered on tensors only
    (v as { __vscodeVariableMenuContext?: string }).__vscodeVariableMenuContext = writable && this.forVsCode && numel > 1 ? WRITABLE_TENSOR_MENU_CONTEXT : TENSOR_MENU_CONTEXT;
    return v;
  }

  private add(c: Container): number {
    const ref = this.next++;
    this.refs.set(ref, { c, epoch: this.rt.get(c.sessionId).epoch });
    const list = this.bySession.get(c.sessionId) ?? [];
    list.push(ref);
    this.bySession.set(c.sessionId, list);
    return ref;
  }

  private memRef(t: TensorTarget): string {
    const id = `djinn-mem-${this.nextMem++}`;
    this.memRefs.set(id, { t, epoch: this.rt.get(t.sessionId).epoch });
    return id;
  }

  private lookup(ref: number): Container {
    const entry = this.refs.get(ref);
    if (!entry) {
      const old = this.oldRefs.get(ref);
      if (old !== undefined) throw new VariableError(`variable reference ${ref} is stale: it is from an earlier stop of session ${old}, which has resumed since (read the variables of its new stop)`);
      throw new VariableError(`variable reference ${ref} is unknown`);
    }
    if (entry.c.kind === "module") return entry.c;
    const s = this.rt.get(entry.c.sessionId);
    if (s.epoch !== entry.epoch) throw new VariableError(`variable reference ${ref} is stale: session ${s.id} has resumed since`);
    return entry.c;
  }

  // -------------------------------------------------------------- scopes

  /**
   * The scopes of a frame. The module frame (where it stopped) shows everything at the stop;
   * the layer frame the layer's tensors and its KV; the pass frame the pass (its tokens, the
   * logits so far, the logit lens); the session frame the session and where its memory is.
   */
  scopes(sessionId: number, kind: FrameKind = "module"): DebugProtocol.Scope[] {
    const add = (c: Container) => this.add(c);
    const lens: DebugProtocol.Scope = { name: "Logit lens", variablesReference: add({ kind: "lens", sessionId }), expensive: true, namedVariables: LENS_TOP_K + 1 };
    const kv = (): DebugProtocol.Scope => ({ name: "KV cache", presentationHint: "registers", variablesReference: add({ kind: "kv", sessionId }), expensive: false, namedVariables: 9 });
    const layer = this.rt.get(sessionId).info.position?.layer ?? 0;
    switch (kind) {
      case "layer":
        return [
          { name: `Layer ${layer}`, presentationHint: "locals", variablesReference: add({ kind: "layer", sessionId }), expensive: false },
          kv(),
        ];
      case "pass":
        return [{ name: "Pass", presentationHint: "locals", variablesReference: add({ kind: "pass", sessionId }), expensive: false }, lens];
      case "session":
        return [
          { name: "Session", presentationHint: "locals", variablesReference: add({ kind: "session", sessionId }), expensive: false },
          { name: "Memory", presentationHint: "registers", variablesReference: add({ kind: "memory", sessionId }), expensive: false, namedVariables: 7 },
        ];
      default:
        return [
          { name: "Activations", presentationHint: "locals", variablesReference: add({ kind: "activations", sessionId }), expensive: false },
          kv(),
          { name: "Session", presentationHint: "arguments", variablesReference: add({ kind: "session", sessionId }), expensive: false },
          lens,
        ];
    }
  }

  // ----------------------------------------------------------- variables

  async variables(args: DebugProtocol.VariablesArguments): Promise<DebugProtocol.Variable[]> {
    const c = this.lookup(args.variablesReference);
    switch (c.kind) {
      case "activations":
        return this.activations(c.sessionId);
      case "kv":
        return this.kv(c.sessionId);
      case "memory":
        return this.kv(c.sessionId).slice(0, MEMORY_ITEMS);
      case "layer":
        return this.layerTensors(c.sessionId);
      case "pass":
        return this.pass(c.sessionId);
      case "session":
        return this.session(c.sessionId);
      case "lens":
        return this.lens(c.sessionId);
      case "static":
        return page(c.items, args);
      case "lazyTensor": {
        const s = await this.rt.tensorSummary(c.sessionId, c.name);
        return [this.tensorVariable(c.sessionId, { ...s, name: c.name }, c.name)];
      }
      case "tensor":
        if (args.filter === "named") return [];
        return this.tensorChildren(c.target, args.start ?? 0, args.count ?? 0);
      case "module":
        return page(this.moduleChildren(c.name), args);
    }
  }

  private async activations(sessionId: number): Promise<DebugProtocol.Variable[]> {
    const list = await this.rt.listTensors(sessionId);
    const order = (n: string) => (n.startsWith("$") ? 2 : n === "k_cache" || n === "v_cache" ? 1 : 0);
    return [...list]
      .sort((a, b) => order(a.name) - order(b.name))
      .map((t) => (t.dtype ? this.tensorVariable(sessionId, t, t.name) : this.lazyVariable(sessionId, t.name, t.description)));
  }

  /** A tensor as one variable: the value line (or `display`), children paged by its first dim. */
  tensorVariable(sessionId: number, s: TensorSummary, evaluateName: string, target?: TensorTarget, display?: string): DebugProtocol.Variable {
    const t: TensorTarget = target ?? { sessionId, name: s.name, prefix: [], shape: s.shape, dtype: s.dtype, writable: s.writable };
    const sub = t.shape.slice(t.prefix.length);
    const expandable = sub.length > 0 && sub.every((d) => d > 0);
    return this.tensorHint({
      name: s.name,
      value: display || summaryLine({ ...s, shape: s.shape.length ? s.shape : sub }),
      type: `${s.dtype}[${sub.join(", ")}]`,
      evaluateName,
      variablesReference: expandable ? this.add({ kind: "tensor", sessionId, target: t }) : 0,
      indexedVariables: expandable ? sub[0] : undefined,
      memoryReference: this.memRef(t),
    }, t.writable, numelOf(sub));
  }

  private lazyVariable(sessionId: number, name: string, description: string): DebugProtocol.Variable {
    return {
      name,
      value: description || "computed on request",
      evaluateName: name,
      variablesReference: this.add({ kind: "lazyTensor", sessionId, name }),
      presentationHint: { kind: "data", lazy: true, attributes: ["readOnly"] },
      __vscodeVariableMenuContext: TENSOR_MENU_CONTEXT,
    } as DebugProtocol.Variable;
  }

  private async tensorChildren(t: TensorTarget, start: number, count: number): Promise<DebugProtocol.Variable[]> {
    const sub = t.shape.slice(t.prefix.length);
    const n = sub[0];
    const from = Math.max(0, Math.min(start, n));
    const to = Math.min(n, from + (count > 0 ? count : DEFAULT_PAGE));
    if (to <= from) return [];
    const region = [...regionOf(t), { start: from, stop: to, step: 0 }];
    if (sub.length === 1) {
      // leaf: the values of [from, to) — one slice request
      const got = await this.rt.fetch(t.sessionId, t.name, region);
      const values = decode(got.data, got.dtype);
      return values.map((v, k) => {
        const idx = [...t.prefix, from + k];
        return {
          name: `[${from + k}]`,
          value: fmtValue(v, got.dtype),
          type: got.dtype,
          evaluateName: `${t.name}[${idx.join(", ")}]`,
          variablesReference: 0,
          presentationHint: { kind: "data", attributes: t.writable ? [] : ["readOnly"] },
        };
      });
    }
    // rows: each a sub-tensor; vectors get a preview of their first values (one request for the page)
    let preview: number[][] | undefined;
    const rowShape = sub.slice(1);
    if (rowShape.length === 1) {
      const k = Math.min(PREVIEW, rowShape[0]);
      const got = await this.rt.fetch(t.sessionId, t.name, [...region, { start: 0, stop: k, step: 0 }]);
      const vals = decode(got.data, got.dtype);
      preview = Array.from({ length: to - from }, (_, r) => vals.slice(r * k, (r + 1) * k));
    }
    return Array.from({ length: to - from }, (_, r) => {
      const i = from + r;
      const child: TensorTarget = { ...t, prefix: [...t.prefix, i] };
      let value = `${shortDtype(t.dtype)}[${rowShape.join(", ")}]`;
      if (preview) {
        const more = rowShape[0] > preview[r].length ? ", …" : "";
        value += ` [${preview[r].map((v) => fmtValue(v, t.dtype)).join(", ")}${more}]`;
      }
      return this.tensorHint({
        name: `[${i}]`,
        value,
        type: `${t.dtype}[${rowShape.join(", ")}]`,
        evaluateName: exprOf(child),
        variablesReference: this.add({ kind: "tensor", sessionId: t.sessionId, target: child }),
        indexedVariables: rowShape[0],
        memoryReference: this.memRef(child),
      }, t.writable, numelOf(rowShape));
    });
  }

  /** The layer's own tensors at the stop (not the pass's tokens and logits, not $N results). */
  private async layerTensors(sessionId: number): Promise<DebugProtocol.Variable[]> {
    const list = await this.rt.listTensors(sessionId);
    return list
      .filter((t) => !PASS_TENSORS.has(t.name) && !t.name.startsWith("$"))
      .map((t) => (t.dtype ? this.tensorVariable(sessionId, t, t.name) : this.lazyVariable(sessionId, t.name, t.description)));
  }

  /** The forward pass: what it is, its input tokens, the logits so far (lazy), what came before it. */
  private async pass(sessionId: number): Promise<DebugProtocol.Variable[]> {
    const s = this.rt.get(sessionId);
    const i = s.info;
    const p = i.position;
    const v = (name: string, value: string): DebugProtocol.Variable => ({ name, value, variablesReference: 0, presentationHint: { attributes: ["readOnly"] } });
    const list = await this.rt.listTensors(sessionId);
    const tensors = list
      .filter((t) => PASS_TENSORS.has(t.name))
      .map((t) => (t.dtype ? this.tensorVariable(sessionId, t, t.name) : this.lazyVariable(sessionId, t.name, t.description)));
    const nLayers = this.rt.nLayers;
    const phase = p?.phase === Phase.PHASE_DECODE ? `decode of token ${p.tokenIndex}` : "prefill";
    return [
      v("phase", p ? phase : "?"),
      v("positions", p ? `${p.inputPos}..${p.inputPos + Math.max(p.numTokens, 1) - 1} (${p.numTokens} token${p.numTokens === 1 ? "" : "s"})` : "?"),
      v("progress", p ? `layer ${p.layer} ${pointName(p.point)}${nLayers ? ` of ${nLayers}` : ""}` : "?"),
      ...tensors,
      v("generated before this pass", `${i.generatedTokens.length} token${i.generatedTokens.length === 1 ? "" : "s"} ${JSON.stringify(i.generatedText)}`),
    ];
  }

  private kv(sessionId: number): DebugProtocol.Variable[] {
    const s = this.rt.get(sessionId);
    const i = s.info;
    const ms = (v: number) => (v > 0 ? `${v.toFixed(3)} ms` : "never");
    const kvPerToken = this.rt.info?.memory?.kvBytesPerToken ?? 0;
    const v = (name: string, value: string): DebugProtocol.Variable => ({ name, value, variablesReference: 0, presentationHint: { attributes: ["readOnly"] } });
    const p = i.position;
    const layer = p?.layer ?? 0;
    const cacheEnd = p ? (p.point === StopPoint.STOP_POINT_LAYER ? p.inputPos : p.inputPos + p.numTokens) : 0;
    const nKv = this.rt.info?.model?.nKvHeads ?? 0;
    const hd = this.rt.info?.model?.headDim ?? 0;
    return [
      v("location", kvLocationName(i.kvLocation)),
      v("bytes", `${fmtBytes(i.kvBytes)} (${i.kvBytes.toLocaleString("en-US")} B: KV + saved activations)`),
      v("context", `${i.context} tokens${kvPerToken ? ` · ${fmtBytes(kvPerToken)} of KV per token` : ""}`),
      v("filled", `${cacheEnd} of ${i.context} positions`),
      v("last swap out", ms(i.lastSwapOutMs)),
      v("last swap in", ms(i.lastSwapInMs)),
      v("swaps", `${i.swapOuts} out · ${i.swapIns} in`),
      this.lazyVariable(sessionId, "k_cache", `keys of layers.${layer} [${nKv}, ${cacheEnd}, ${hd}] (expand to read)`),
      this.lazyVariable(sessionId, "v_cache", `values of layers.${layer} [${nKv}, ${cacheEnd}, ${hd}] (expand to read)`),
    ];
  }

  private session(sessionId: number): DebugProtocol.Variable[] {
    const s: RtSession = this.rt.get(sessionId);
    const i = s.info;
    const p = i.position;
    const v = (name: string, value: string, extra: Partial<DebugProtocol.Variable> = {}): DebugProtocol.Variable => ({
      name, value, variablesReference: 0, presentationHint: { attributes: ["readOnly"] }, ...extra,
    });
    const tokens = (name: string, ids: number[]) => {
      const items = ids.map((t, k) => v(`[${k}]`, String(t)));
      return v(name, `[${ids.slice(0, 12).join(", ")}${ids.length > 12 ? ", …" : ""}] (${ids.length})`, {
        variablesReference: ids.length ? this.add({ kind: "static", sessionId, items }) : 0,
        indexedVariables: ids.length || undefined,
      });
    };
    const phase = p?.phase === Phase.PHASE_DECODE ? `decode of token ${p.tokenIndex}` : "prefill";
    return [
      v("id", String(i.id)),
      ...(i.label ? [v("label", JSON.stringify(i.label))] : []),
      v("prompt", JSON.stringify(i.prompt || "(token ids)")),
      tokens("prompt tokens", i.promptTokens),
      v("generated text", JSON.stringify(i.generatedText)),
      tokens("generated tokens", i.generatedTokens),
      v("position", p ? `${phase} · positions ${p.inputPos}..${p.inputPos + Math.max(p.numTokens, 1) - 1} · layer ${p.layer} ${pointName(p.point)}` : "?"),
      v("pass", p ? `${phase} (pass ${p.tokenIndex}, ${p.numTokens} token${p.numTokens === 1 ? "" : "s"} at position ${p.inputPos})` : "?"),
      v("max new tokens", String(i.maxNewTokens)),
      v("stop reason", s.stop?.text ? `${reasonText(s)}: ${s.stop.text}` : reasonText(s)),
      ...(i.owner ? [v("owner", i.owner)] : []),
      ...(i.history ? [v("time travel", historyLine(i.history))] : []),
      ...(i.leaseExpiresAt > 0 ? [v("lease", `no client holds it: kept until ${new Date(i.leaseExpiresAt * 1000).toISOString()}`)] : []),
    ];
  }

  private async lens(sessionId: number): Promise<DebugProtocol.Variable[]> {
    const top = await this.rt.logitLens(sessionId, LENS_TOP_K);
    const s = this.rt.get(sessionId);
    const p = s.info.position;
    const head: DebugProtocol.Variable = {
      name: "at",
      value: `lm_head(norm(hidden)) of the last token (position ${p ? p.inputPos + Math.max(p.numTokens, 1) - 1 : "?"})`,
      variablesReference: 0,
      presentationHint: { attributes: ["readOnly"] },
    };
    return [
      head,
      ...top.map((t, k) => ({
        name: `#${k + 1} ${JSON.stringify(t.text)}`,
        value: `p=${fmtG(t.prob, 4)} logit=${fmtG(t.logit, 5)} (token ${t.token})`,
        variablesReference: 0,
        presentationHint: { attributes: ["readOnly"] } as DebugProtocol.VariablePresentationHint,
      })),
    ];
  }

  // -------------------------------------------------------------- writes

  /** setVariable: `name` is a tensor in Activations or an index `[i]` of an expanded tensor. */
  async setVariable(args: DebugProtocol.SetVariableArguments): Promise<WriteResult> {
    const c = this.lookup(args.variablesReference);
    let sessionId: number;
    let name: string;
    let slice: DimSlice[];
    if (c.kind === "activations") {
      sessionId = c.sessionId;
      name = args.name;
      slice = [];
    } else if (c.kind === "tensor") {
      const m = /^\[(\d+)\]$/.exec(args.name);
      if (!m) throw new VariableError(`'${args.name}' is not an index of ${exprOf(c.target)}; expected [i]`);
      sessionId = c.sessionId;
      name = c.target.name;
      slice = [...regionOf(c.target), { start: Number(m[1]), stop: Number(m[1]) + 1, step: 0 }];
    } else {
      throw new VariableError(`'${args.name}' cannot be changed: only activations (and their elements) are writable`);
    }
    return this.write(sessionId, name, slice, args.value);
  }

  /** setExpression: `hidden`, `hidden[3]`, `mlp_out[-1, :16]`, ... */
  async setExpression(sessionId: number, expression: string, value: string): Promise<WriteResult> {
    const r = parseRegion(expression);
    if (!r) {
      throw new VariableError(`cannot assign to '${expression}': write a tensor name with optional indices and slices, e.g. hidden[-1, :16]`);
    }
    return this.write(sessionId, r.name, r.slice, value);
  }

  /**
   * Writes `value` into a region: a number fills it (nan and inf too), `+= x` / `-= x` add a
   * number, anything else is an expression evaluated on the server whose result is copied in.
   */
  async write(sessionId: number, name: string, slice: DimSlice[], value: string): Promise<WriteResult> {
    const add = /^\s*([-+])=\s*(.*)$/.exec(value);
    if (add) {
      const x = parseNumber(add[2]);
      if (x === undefined) throw new VariableError(`'${value}': '+=' and '-=' take a number`);
      await this.rt.write(sessionId, name, slice, { scalar: add[1] === "-" ? -x : x, add: true });
    } else {
      const x = parseNumber(value);
      if (x !== undefined) {
        await this.rt.write(sessionId, name, slice, { scalar: x, add: false });
      } else {
        const r = await this.rt.evaluate(sessionId, value);
        if (!r.isTensor) {
          await this.rt.write(sessionId, name, slice, { scalar: r.scalar, add: false });
        } else {
          const region = await this.rt.tensorSummary(sessionId, name, slice);
          const numel = region.shape.reduce((a, b) => a * b, 1);
          if (r.summary!.numel !== numel) {
            throw new VariableError(`'${value}' has ${r.summary!.numel} elements (shape [${r.summary!.shape.join(", ")}]) but ${name} region has ${numel} (shape [${region.shape.join(", ")}])`);
          }
          if (numel * elementSize(region.dtype) > MAX_EXPR_WRITE) throw new VariableError(`writing ${numel} elements from an expression is over the 64 MiB limit`);
          const got = await this.rt.fetch(sessionId, r.resultName, []);
          const data = got.dtype === region.dtype ? got.data : encode(decode(got.data, got.dtype), region.dtype);
          await this.rt.write(sessionId, name, slice, { data, dtype: region.dtype, shape: region.shape });
        }
      }
    }
    // the new value, from the server
    const after = await this.rt.tensorSummary(sessionId, name, slice);
    if (after.numel === 1) {
      const got = await this.rt.fetch(sessionId, name, slice);
      return { value: fmtValue(decode(got.data, got.dtype)[0], got.dtype), type: got.dtype, variablesReference: 0 };
    }
    if (slice.length === 0) {
      const v = this.tensorVariable(sessionId, { ...after, name }, name);
      return { value: v.value, type: v.type, variablesReference: v.variablesReference, indexedVariables: v.indexedVariables, memoryReference: v.memoryReference };
    }
    return { value: summaryLine(after), type: `${after.dtype}[${after.shape.join(", ")}]`, variablesReference: 0 };
  }

  // ------------------------------------------------------------ evaluate

  /** An Evaluate result (or a plain tensor name) as a DAP evaluate body. */
  async evaluate(sessionId: number, expression: string): Promise<DebugProtocol.EvaluateResponse["body"]> {
    const name = expression.trim();
    if (/^(\$\d+|[A-Za-z_][A-Za-z0-9_]*)$/.test(name)) {
      // A plain tensor name: its summary (one GetTensor), and the variable pages the tensor itself.
      const s = await this.summaryOf(sessionId, name);
      if (s) {
        const v = this.tensorVariable(sessionId, { ...s, name }, name);
        return { result: v.value, type: v.type, variablesReference: v.variablesReference, indexedVariables: v.indexedVariables, memoryReference: v.memoryReference, presentationHint: v.presentationHint };
      }
    }
    const r = await this.rt.evaluate(sessionId, expression);
    if (r.isTensor && r.summary) {
      // The server's line is the display (shape(x) reads "[1, 128]"; small results show values).
      const v = this.resultVariable(sessionId, r);
      const also = (r.also ?? []).filter((a) => a.isTensor && a.summary);
      if (also.length === 0) {
        return { result: `${r.resultName} = ${v.value}`, type: v.type, variablesReference: v.variablesReference, indexedVariables: v.indexedVariables, memoryReference: v.memoryReference };
      }
      // topk: `$3 = f32[5] [...] · indices $4 = i64[5] [...]`, expanding to `values` and `indices`
      const names = also.length === 1 ? ["indices"] : also.map((_, k) => `result ${k + 2}`);
      const items = [{ ...v, name: "values" }, ...also.map((a, k) => ({ ...this.resultVariable(sessionId, a), name: names[k] }))];
      const result = [`${r.resultName} = ${v.value}`, ...also.map((a, k) => `${names[k]} ${a.resultName} = ${items[k + 1].value}`)].join(" · ");
      return { result, type: v.type, variablesReference: this.add({ kind: "static", sessionId, items }), namedVariables: items.length };
    }
    const numeric = /^[-+]?(\d|\.\d|inf|nan)/i.test(r.value);
    return { result: r.value, type: r.isBool ? "bool" : numeric ? "number" : "str", variablesReference: 0 };
  }

  /** An Evaluate tensor result ($N) as a variable: the server's value line, children paged. */
  private resultVariable(sessionId: number, r: EvaluateResponse): DebugProtocol.Variable {
    const s = { ...r.summary!, name: r.resultName, writable: false };
    return this.tensorVariable(sessionId, s, r.resultName, undefined, r.value);
  }

  // ------------------------------------------------------------ modules

  /**
   * A module name of the model (`layers.10`, `layers.10.attn`, `norm`) or a group of them
   * (`layers`) as an evaluate answer: its description, expandable to where to break and its
   * child modules. Undefined when `expression` does not name into the module tree; an error
   * for a dotted name under a known root that names no module (`layers.99`).
   */
  evaluateModule(expression: string): DebugProtocol.EvaluateResponse["body"] | undefined {
    const modules = this.rt.info?.modules ?? [];
    if (modules.length === 0) return undefined;
    const name = expression.trim();
    if (this.moduleKnown(name)) {
      const v = this.moduleVariable(name);
      return { result: v.value, type: v.type, variablesReference: v.variablesReference, namedVariables: v.namedVariables, presentationHint: v.presentationHint };
    }
    if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+$/.test(name)) return undefined;
    const parts = name.split(".");
    if (!modules.some((m) => m.name.split(".")[0] === parts[0])) return undefined;
    let known = parts[0];
    for (let k = 2; k < parts.length && this.moduleKnown(parts.slice(0, k).join(".")); k++) known = parts.slice(0, k).join(".");
    const kids = this.moduleChildNames(known);
    const list = kids.length <= 6 ? kids.join(", ") : `${kids.slice(0, 2).join(", ")} … ${kids[kids.length - 1]} (${kids.length})`;
    throw new VariableError(`no module '${name}' in ${this.rt.info?.model?.name ?? "the model"}: ${known} has ${list || "no sub-modules"}`);
  }

  private moduleKnown(name: string): boolean {
    const modules = this.rt.info?.modules ?? [];
    return modules.some((m) => m.name === name) || (!name.includes(".") && modules.some((m) => m.name.startsWith(name + ".")));
  }

  /** The modules one level below `name` (layers -> layers.0 …, layers.10 -> layers.10.attn, layers.10.mlp). */
  private moduleChildNames(name: string): string[] {
    const depth = name.split(".").length + 1;
    const out: string[] = [];
    const seen = new Set<string>();
    for (const m of this.rt.info?.modules ?? []) {
      if (!m.name.startsWith(name + ".")) continue;
      const child = m.name.split(".").slice(0, depth).join(".");
      if (!seen.has(child)) seen.add(child), out.push(child);
    }
    return out;
  }

  private moduleVariable(name: string): DebugProtocol.Variable {
    const m = this.rt.info?.modules.find((x) => x.name === name);
    const kids = this.moduleChildNames(name);
    let ref = this.moduleRefs.get(name);
    if (ref === undefined) {
      ref = this.next++;
      this.refs.set(ref, { c: { kind: "module", sessionId: -1, name }, epoch: 0 });
      this.moduleRefs.set(name, ref);
    }
    const value = m
      ? `${m.name} · ${m.kind} · ${m.numParams.toLocaleString("en-US")} params${m.layer >= 0 ? ` · layer ${m.layer}` : ""}`
      : `${name} · ${kids.length} modules (${kids[0]} … ${kids[kids.length - 1]})`;
    return {
      name,
      value,
      type: m?.kind ?? "modules",
      evaluateName: name,
      variablesReference: ref,
      namedVariables: kids.length + (m ? 1 : 0),
      presentationHint: { kind: "class", attributes: ["readOnly"] },
    };
  }

  private moduleChildren(name: string): DebugProtocol.Variable[] {
    const out: DebugProtocol.Variable[] = [];
    if (this.rt.info?.modules.some((x) => x.name === name)) {
      const t = moduleToStop(name, this.rt.nLayers || undefined);
      let value: string;
      if (isStopTarget(t)) {
        const where = t.point === StopPoint.STOP_POINT_ATTN ? `after the attention of layer ${t.layer}` : t.point === StopPoint.STOP_POINT_MLP ? `after the MLP of layer ${t.layer}` : `before layer ${t.layer} (its input)`;
        const at = this.outline?.(name);
        value = `stops ${where}: a function breakpoint named ${name}${at ? `, or the gutter of line ${at.line} of ${at.file}` : ""}`;
      } else {
        value = t.error;
      }
      out.push({ name: "break", value, variablesReference: 0, presentationHint: { kind: "property", attributes: ["readOnly"] } });
    }
    for (const child of this.moduleChildNames(name)) out.push(this.moduleVariable(child));
    return out;
  }

  /** The summary of a catalog tensor, or undefined when `name` is not one (a scalar such as `token`). */
  private async summaryOf(sessionId: number, name: string): Promise<TensorSummary | undefined> {
    const cached = this.rt.get(sessionId).tensors;
    if (cached) {
      const t = (await cached).find((x) => x.name === name);
      if (!t) return undefined;
      if (t.dtype) return t;
    } else if (!CATALOG.has(name) && !name.startsWith("$")) {
      return undefined;
    }
    try {
      return await this.rt.tensorSummary(sessionId, name);
    } catch (e) {
      if ((e as { code?: number }).code === 5) return undefined; // NOT_FOUND: not a tensor at this stop
      throw e;
    }
  }

  // ---------------------------------------------------- data breakpoints

  /**
   * What a data breakpoint on variable `name` of container `ref` watches: a tensor of the stop's
   * catalog, by name (the server's DataBreakpoint.tensor), or why it cannot be watched. Without
   * `ref`, `name` is an expression (a watch). Never throws: VS Code asks this to build a menu.
   */
  watchable(ref: number | undefined, name: string): { tensor: string } | { why: string } {
    const catalog = [...CATALOG].join(", ");
    if (ref) {
      let c: Container;
      try {
        c = this.lookup(ref);
      } catch (e) {
        return { why: (e as Error).message };
      }
      if (c.kind === "tensor") {
        const i = /^\[(\d+)\]$/.exec(name);
        const part = i ? exprOf({ ...c.target, prefix: [...c.target.prefix, Number(i[1])] }) : exprOf(c.target);
        return { why: `a data breakpoint watches a whole tensor: set it on ${c.target.name}, with a condition over this part, e.g. max(abs(${part})) > 1000` };
      }
      if (!["activations", "layer", "kv", "pass", "lazyTensor"].includes(c.kind)) return { why: `${name} is not a tensor of the forward pass (${catalog})` };
    }
    const n = name.trim();
    if (n.startsWith("$")) return { why: `${n} is an Evaluate result, dropped when the session resumes: watch a tensor of the forward pass (${catalog})` };
    if (!CATALOG.has(n)) return { why: `${n} is not a tensor of the forward pass (${catalog})` };
    return { tensor: n };
  }

  // ------------------------------------------------------------ memory

  /** The raw bytes [offset, offset+count) of a tensor region (C order, its own dtype). */
  async readMemory(memoryReference: string, offset: number, count: number): Promise<{ address: string; data: Buffer; unreadable: number }> {
    const entry = this.memRefs.get(memoryReference);
    if (!entry) throw new VariableError(`memory reference '${memoryReference}' is unknown or stale`);
    const t = entry.t;
    if (this.rt.get(t.sessionId).epoch !== entry.epoch) throw new VariableError(`memory reference '${memoryReference}' is stale: session ${t.sessionId} has resumed since`);
    const es = elementSize(t.dtype);
    const sub = t.shape.slice(t.prefix.length);
    const total = sub.reduce((a, b) => a * b, 1) * es;
    const start = Math.max(0, offset);
    const end = Math.min(total, offset + Math.min(count, MAX_READ));
    if (end <= start) return { address: String(offset), data: Buffer.alloc(0), unreadable: Math.max(0, count) };
    const e0 = Math.floor(start / es);
    const e1 = Math.ceil(end / es);
    const { slice, base } = covering(sub, e0, e1);
    const got = await this.rt.fetch(t.sessionId, t.name, [...regionOf(t), ...slice]);
    const from = start - base * es;
    const data = got.data.subarray(from, from + (end - start));
    return { address: String(start), data, unreadable: Math.max(0, count - data.length - (start - offset)) };
  }
}

/** The smallest block of leading-dim slices that holds flat elements [e0, e1) of a tensor of `shape`. */
export function covering(shape: number[], e0: number, e1: number): { slice: DimSlice[]; base: number } {
  const slice: DimSlice[] = [];
  let base = 0;
  for (let d = 0; d < shape.length; d++) {
    const stride = shape.slice(d + 1).reduce((a, b) => a * b, 1);
    const i0 = Math.floor((e0 - base) / stride);
    const i1 = Math.floor((e1 - 1 - base) / stride);
    base += i0 * stride;
    if (i0 === i1 && d < shape.length - 1) {
      slice.push({ start: i0, stop: i0 + 1, step: 0 });
      continue;
    }
    slice.push({ start: i0, stop: i1 + 1, step: 0 });
    break;
  }
  return { slice, base };
}

function page<T>(items: T[], args: DebugProtocol.VariablesArguments): T[] {
  const start = args.start ?? 0;
  return args.count ? items.slice(start, start + args.count) : items.slice(start);
}

const REASONS: Record<number, string> = {
  [StopReason.STOP_REASON_BREAKPOINT]: "breakpoint",
  [StopReason.STOP_REASON_STEP]: "step",
  [StopReason.STOP_REASON_PAUSE]: "pause",
  [StopReason.STOP_REASON_ENTRY]: "entry",
  [StopReason.STOP_REASON_NAN]: "NaN",
  [StopReason.STOP_REASON_INF]: "Inf",
  [StopReason.STOP_REASON_NORM_SPIKE]: "norm spike",
  [StopReason.STOP_REASON_STEP_BACK]: "step back",
  [StopReason.STOP_REASON_RESTART]: "restart of the pass",
};

function reasonText(s: RtSession): string {
  if (!s.stop) return "running";
  const ids = s.stop.hitIds.length ? ` (breakpoint${s.stop.hitIds.length > 1 ? "s" : ""} ${s.stop.hitIds.join(", ")})` : "";
  return (REASONS[s.stop.reason] ?? "unknown") + ids;
}
