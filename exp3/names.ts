// Short enum names for the results file ("PAUSED", "HOST", "SWAP_OUT").
import { eventKindToJSON, kvLocationToJSON, sessionStateToJSON, type EventKind, type KvLocation, type SessionState } from "../client";

export const stateName = (s: SessionState): string => sessionStateToJSON(s).replace(/^SESSION_STATE_/, "");
export const kvName = (k: KvLocation): string => kvLocationToJSON(k).replace(/^KV_LOCATION_/, "");
export const eventName = (k: EventKind): string => eventKindToJSON(k).replace(/^EVENT_KIND_/, "");
