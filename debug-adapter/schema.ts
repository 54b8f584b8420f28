// Launch and attach attributes checked against the one schema there is: the extension's
// package.json (contributes.debuggers[djinn].configurationAttributes), with ajv. The schema is
// bundled into the adapter at build time, so the adapter and VS Code's launch.json IntelliSense
// can never disagree. Errors name the attribute (and the item of a list) and say what is expected.
import Ajv, { type ErrorObject, type ValidateFunction } from "ajv";
import pkg from "../package.json";

export type RequestKind = "launch" | "attach";

type Schema = {
  type?: string | string[];
  enum?: unknown[];
  anyOf?: Schema[];
  items?: Schema;
  properties?: Record<string, Schema>;
  additionalProperties?: Schema | boolean;
  required?: string[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  pattern?: string;
};

export class ConfigError extends Error {
  constructor(readonly attribute: string, message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** The schema of `launch` or `attach` as package.json declares it. */
export function attributeSchema(kind: RequestKind): Schema {
  const debuggers = (pkg as { contributes?: { debuggers?: Array<{ type: string; configurationAttributes?: Record<string, Schema> }> } }).contributes?.debuggers ?? [];
  const s = debuggers.find((d) => d.type === "djinn")?.configurationAttributes?.[kind];
  if (!s) throw new Error(`package.json declares no '${kind}' attributes for the djinn debug type`);
  return s;
}

/**
 * Words for patterns (a regular expression is no message for a user). Keyed by the pattern, so
 * a pattern changed in package.json falls back to "a string matching /…/" instead of lying.
 */
const PATTERN_WORDS: Record<string, string> = {
  "^(\\[[0-9a-fA-F:.]+\\]|[A-Za-z0-9_.-]+):\\d{1,5}$": 'an address "host:port" (e.g. "127.0.0.1:5556")',
  "^auto:\\d+(\\.\\d+)?$": '"auto:FRACTION" (e.g. "auto:0.9")',
  "^(embed_tokens|layers\\.\\d+(\\.(attn|mlp))?)$": 'a module name such as "layers.10", "layers.10.attn", "layers.10.mlp"',
};

/** Attributes whose expectation reads better said whole than derived from their schema. */
const WORDING: Record<string, string> = {
  prompt: "a string, or a list of prompts (each a string or a list of token ids)",
  vramBudgetGb: 'a number of GB or "auto:FRACTION" (e.g. 80 or "auto:0.9")',
  breakpoints: 'a list of layer numbers or module names (e.g. [10, 20, "layers.30.mlp"])',
};

/** What a value of `s` is, in words: "an integer in 1..10000", `one of "auto", "cpu"`, ... */
export function expectation(s: Schema): string {
  if (s.anyOf) return s.anyOf.map(expectation).join(" or ");
  if (s.enum) return `one of ${s.enum.map((x) => JSON.stringify(x)).join(", ")}`;
  const type = Array.isArray(s.type) ? s.type[0] : s.type;
  const range = (noun: string) => {
    if (s.minimum !== undefined && s.maximum !== undefined) return `${noun} in ${s.minimum}..${s.maximum}`;
    if (s.exclusiveMinimum !== undefined) return `${noun} greater than ${s.exclusiveMinimum}`;
    if (s.minimum !== undefined) return noun === "an integer" ? `${noun} >= ${s.minimum}` : `${noun} of at least ${s.minimum}`;
    if (s.maximum !== undefined) return `${noun} of at most ${s.maximum}`;
    return noun;
  };
  switch (type) {
    case "integer": return range("an integer");
    case "number": return range("a number");
    case "boolean": return "true or false";
    case "string": return s.pattern ? PATTERN_WORDS[s.pattern] ?? `a string matching /${s.pattern}/` : "a string";
    case "array": return s.items ? `a list of ${plural(expectation(s.items))}` : "a list";
    case "object":
      return typeof s.additionalProperties === "object" ? `an object of ${expectation(s.additionalProperties).replace(/^an? /, "")} values` : "an object";
    default: return "a valid value";
  }
}

function plural(x: string): string {
  return x.replace(/^an? (integer|number|string)\b/, "$1s").replace(/^a list\b/, "lists").replace(/^true or false$/, "booleans");
}

export function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  const t = typeof v;
  if (t === "object") return "an object";
  const shown = t === "string" ? JSON.stringify(v) : String(v);
  return `${shown} (${t === "string" ? "a string" : t === "number" ? "a number" : t === "boolean" ? "a boolean" : t})`;
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length][b.length];
}

/** Attributes VS Code or launch.json add to every configuration; accepted and ignored. */
const GENERIC = new Set([
  "type", "request", "name", "presentation", "preLaunchTask", "postDebugTask", "internalConsoleOptions",
  "debugServer", "noDebug", "suppressMultipleSessionWarning", "serverReadyAction", "windows", "linux", "osx",
  "suppressDebugToolbar", "suppressDebugStatusbar", "suppressDebugView", "timeout",
]);

// VS Code's own schema keywords (enumDescriptions, markdownDescription, ...) are not JSON
// Schema: ajv must ignore them rather than refuse the schema (strict: false).
const ajv = new Ajv({ allErrors: true, verbose: true, strict: false });
const compiled = new Map<RequestKind, ValidateFunction>();

function validator(kind: RequestKind): ValidateFunction {
  let v = compiled.get(kind);
  if (!v) {
    const s = attributeSchema(kind);
    // `required` is checked by the adapter (with the message of each request); the rest by ajv.
    v = ajv.compile({ type: "object", properties: s.properties ?? {} });
    compiled.set(kind, v);
  }
  return v;
}

/**
 * Throws a ConfigError for the first attribute (in the schema's order) that is unknown or does
 * not match the schema: `unknown launch attribute 'sesions' (did you mean 'sessions'?)`,
 * `launch attribute 'sessions' must be an integer in 1..10000; got "8" (a string)`,
 * `launch attribute 'prompt' item 1 must be ...`.
 */
export function checkAttributes(kind: RequestKind, raw: Record<string, unknown>): void {
  const schema = attributeSchema(kind);
  const known = Object.keys(schema.properties ?? {});
  for (const key of Object.keys(raw)) {
    if (key.startsWith("__") || GENERIC.has(key) || known.includes(key)) continue;
    const near = known
      .map((k) => [k, editDistance(key.toLowerCase(), k.toLowerCase())] as const)
      .filter(([, d]) => d <= 3)
      .sort((x, y) => x[1] - y[1])[0];
    const hint = near ? ` (did you mean '${near[0]}'?)` : "";
    throw new ConfigError(key, `unknown ${kind} attribute '${key}'${hint}; the djinn debug type knows: ${known.join(", ")}`);
  }
  const validate = validator(kind);
  const own = Object.fromEntries(known.filter((k) => raw[k] !== undefined).map((k) => [k, raw[k]]));
  if (validate(own)) return;
  const errors = (validate.errors ?? []) as ErrorObject[];
  for (const attr of known) {
    const mine = errors.filter((e) => e.instancePath === `/${attr}` || e.instancePath.startsWith(`/${attr}/`));
    if (mine.length) throw attributeError(kind, attr, raw[attr], schema.properties![attr], mine);
  }
  throw new ConfigError("(arguments)", `${kind} arguments do not match the schema: ${ajv.errorsText(errors)}`);
}

function attributeError(kind: RequestKind, attr: string, value: unknown, s: Schema, errors: ErrorObject[]): ConfigError {
  // A list item that fails: name the item (the deepest path among the errors is the culprit).
  const deepest = errors.reduce((a, b) => (b.instancePath.split("/").length > a.instancePath.split("/").length ? b : a));
  const parts = deepest.instancePath.split("/").slice(2);
  if (Array.isArray(value) && parts.length > 0) {
    const i = Number(parts[0]);
    const itemSchema = itemOf(s);
    const what = itemSchema ? expectation(itemSchema) : "valid";
    return new ConfigError(attr, `${kind} attribute '${attr}' item ${i} must be ${what}; got ${describe(value[i])}`);
  }
  const expected = WORDING[attr] ?? expectation(s);
  const inner = value !== null && typeof value === "object" && !Array.isArray(value) && parts.length > 0
    ? ` ('${parts[0]}' is ${describe((value as Record<string, unknown>)[parts[0]])})`
    : "";
  return new ConfigError(attr, `${kind} attribute '${attr}' must be ${expected}; got ${describe(value)}${inner}`);
}

/** The items schema of an array schema (or of the array branch of an anyOf). */
function itemOf(s: Schema): Schema | undefined {
  if (s.items) return s.items;
  return s.anyOf?.find((b) => b.type === "array")?.items;
}
