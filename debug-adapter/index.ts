// What the extension imports to run the adapter inline (DebugAdapterInlineImplementation).
export { DjinnDebugSession, ErrorIds, normalizeCondition } from "./session";
export { parseLaunch, parseAttach, ConfigError, type LaunchConfig, type AttachConfig } from "./config";
export { generateOutline, parseOutline, moduleToStop } from "./outline";
