"""Runtime objects <-> protobuf messages. Nothing else in the server knows the wire names."""
from __future__ import annotations

from ..runtime.events import ServerEvent
from ..runtime.session import ATTN, LAYER, MLP, BreakpointSpec, DataBreakpointSpec, Session, TrapSpec
from ..v1 import djinn_pb2 as pb

POINT_TO_PB = {LAYER: pb.STOP_POINT_LAYER, ATTN: pb.STOP_POINT_ATTN, MLP: pb.STOP_POINT_MLP}
PB_TO_POINT = {pb.STOP_POINT_UNSPECIFIED: LAYER, pb.STOP_POINT_LAYER: LAYER, pb.STOP_POINT_ATTN: ATTN, pb.STOP_POINT_MLP: MLP}
STATE_TO_PB = {"created": pb.SESSION_STATE_CREATED, "running": pb.SESSION_STATE_RUNNING, "paused": pb.SESSION_STATE_PAUSED,
               "finished": pb.SESSION_STATE_FINISHED, "closed": pb.SESSION_STATE_CLOSED, "failed": pb.SESSION_STATE_FAILED}
KV_TO_PB = {"none": pb.KV_LOCATION_NONE, "device": pb.KV_LOCATION_DEVICE, "host": pb.KV_LOCATION_HOST,
            "moving_out": pb.KV_LOCATION_MOVING_OUT, "moving_in": pb.KV_LOCATION_MOVING_IN, "disk": pb.KV_LOCATION_DISK,
            "moving_to_disk": pb.KV_LOCATION_MOVING_TO_DISK, "moving_from_disk": pb.KV_LOCATION_MOVING_FROM_DISK}
REASON_TO_PB = {"": pb.STOP_REASON_UNSPECIFIED, "breakpoint": pb.STOP_REASON_BREAKPOINT, "step": pb.STOP_REASON_STEP,
                "pause": pb.STOP_REASON_PAUSE, "entry": pb.STOP_REASON_ENTRY, "nan": pb.STOP_REASON_NAN,
                "inf": pb.STOP_REASON_INF, "norm_spike": pb.STOP_REASON_NORM_SPIKE, "data": pb.STOP_REASON_DATA_BREAKPOINT,
                "step back": pb.STOP_REASON_STEP_BACK, "restart": pb.STOP_REASON_RESTART}
EVENT_TO_PB = {"created": pb.EVENT_KIND_CREATED, "stopped": pb.EVENT_KIND_STOPPED, "resumed": pb.EVENT_KIND_RESUMED,
               "swap_out": pb.EVENT_KIND_SWAP_OUT, "swap_in": pb.EVENT_KIND_SWAP_IN, "token": pb.EVENT_KIND_TOKEN,
               "finished": pb.EVENT_KIND_FINISHED, "closed": pb.EVENT_KIND_CLOSED, "error": pb.EVENT_KIND_ERROR,
               "waiting": pb.EVENT_KIND_WAITING, "device_failed": pb.EVENT_KIND_DEVICE_FAILED,
               "output": pb.EVENT_KIND_OUTPUT, "spill": pb.EVENT_KIND_SPILL}
STEP_FROM_PB = {pb.STEP_KIND_UNSPECIFIED: "layer", pb.STEP_KIND_SUBLAYER: "sublayer", pb.STEP_KIND_LAYER: "layer",
                pb.STEP_KIND_TOKEN: "token"}


def session_info(s: Session, viewer=None) -> pb.SessionInfo:
    """A snapshot; built on the worker thread when an event happens, or on request. The hit
    breakpoint ids are the viewer's own ((user, client) key); none without a viewer."""
    pos = pb.Position(layer=s.layer, point=POINT_TO_PB[s.point],
                      phase=pb.PHASE_PREFILL if s.pass_index == 0 else pb.PHASE_DECODE, token_index=s.pass_index,
                      input_pos=s.input_pos, num_tokens=int(s.pass_tokens.shape[0]) if s.pass_tokens is not None else 0)
    m = s.memory
    return pb.SessionInfo(
        id=s.id, label=s.label, state=STATE_TO_PB[s.state], position=pos, stop_reason=REASON_TO_PB.get(s.stop_reason, 0),
        hit_breakpoint_ids=[i for key, i in s.hit_ids if key == viewer], kv_location=KV_TO_PB[m.location], kv_bytes=m.total_bytes, context=s.context,
        prompt_tokens=s.prompt_tokens, generated_tokens=s.generated, generated_text=s.text,
        max_new_tokens=s.max_new_tokens, last_swap_out_ms=s.last_swap_out_ms, last_swap_in_ms=s.last_swap_in_ms,
        swap_outs=s.swap_outs, swap_ins=s.swap_ins, error=s.error, created_at=s.created_at, prompt=s.prompt,
        owner=s.owner, lease_expires_at=s.lease_expires_at,
        history=pb.HistoryInfo(**s.history.info()) if s.history is not None else None)


def breakpoints_from_pb(bps) -> list[BreakpointSpec]:
    return [BreakpointSpec(id=b.id, layer=b.layer, point=PB_TO_POINT.get(b.point, LAYER), condition=b.condition,
                           hit_condition=b.hit_condition, log_message=b.log_message) for b in bps]


def data_breakpoints_from_pb(dbs) -> list[DataBreakpointSpec]:
    return [DataBreakpointSpec(id=d.id, tensor=d.tensor, condition=d.condition, hit_condition=d.hit_condition)
            for d in dbs]


def traps_from_pb(t) -> TrapSpec:
    return TrapSpec(nan=t.nan, inf=t.inf, norm_spike=t.norm_spike)


def tensor_summary(d: dict) -> pb.TensorSummary:
    keys = ("name", "dtype", "shape", "min", "max", "mean", "std", "l2_norm", "nan_count", "inf_count", "numel",
            "writable", "description", "compute_ms")
    msg = pb.TensorSummary(**{k: d[k] for k in keys if k in d and d[k] is not None})
    msg.values.extend(float(v) for v in d.get("values") or ())   # a small tensor's elements (int64 as doubles)
    return msg


def evaluate_response(d: dict) -> pb.EvaluateResponse:
    """tensor_ops.evaluate_expression's answer; `also` (topk's indices) nests the same shape."""
    resp = pb.EvaluateResponse(value=d.get("value", ""), is_tensor=d.get("is_tensor", False),
                               result_name=d.get("result_name", ""), scalar=d.get("scalar", 0.0),
                               is_bool=d.get("is_bool", False), compute_ms=d.get("compute_ms", 0.0))
    if "summary" in d:
        resp.summary.CopyFrom(tensor_summary(d["summary"]))
    resp.also.extend(evaluate_response({"compute_ms": d.get("compute_ms", 0.0), **a}) for a in d.get("also", ()))
    return resp


def event(ev: ServerEvent) -> pb.Event:
    gbps = ev.nbytes / ev.ms / 1e6 if ev.ms > 0 else 0.0
    return pb.Event(seq=ev.seq, time=ev.time, kind=EVENT_TO_PB[ev.kind], session_id=ev.session_id, session=ev.snapshot,
                    stop_reason=REASON_TO_PB.get(ev.stop_reason, 0), bytes=ev.nbytes, ms=ev.ms, gbps=gbps,
                    token=ev.token, text=ev.text,
                    breakpoint_id=ev.hits[0][1] if ev.kind == "output" and ev.hits else 0)


def dims(slices) -> list[tuple[int, int, int]]:
    return [(d.start, d.stop, d.step) for d in slices]
