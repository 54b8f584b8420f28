"""Fuzzing every RPC of a real server subprocess (CPU, tiny-40l) with hypothesis.

- typed requests: every field of every request message drawn from its descriptor (every
  scalar type at its extremes, repeated fields, nested messages, enums including unknown
  values, long strings, bytes, session ids that are real, closed, another user's, 0, negative, huge);
- raw bytes on the wire for every method (no serializer): garbage, and mutated real requests;
- random metadata: tokens (right, wrong, missing, another user's), client ids (valid, too long,
  bad characters), extra headers; and one request over --max-request-mb.

Must hold for every input: no UNKNOWN status; no INTERNAL (the service's answer to a bug in a
handler); bytes that do not parse as the request message get INVALID_ARGUMENT (grpc.aio alone
says UNKNOWN); a wrong token is always UNAUTHENTICATED; the server process stays alive. Afterwards a normal
session (breakpoints, stop, evaluate, continue, finish) still works and generates the tokens of
an uninterrupted run. The counts (inputs per RPC, statuses) are printed at the end.
"""
from __future__ import annotations

import random
import time
from collections import Counter, defaultdict

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor as FD
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from djinn.v1 import djinn_pb2 as pb
from loadgen import Conn, References, ServerProcess, make_users, metadata, server_supports, write_tokens_file

SERVICE = pb.DESCRIPTOR.services_by_name["Djinn"]
METHODS = {m.name: m for m in SERVICE.methods}
STREAMING = {m.name for m in SERVICE.methods if m.server_streaming}
MAX_REQUEST_MB = 1
# examples per method: the infinite streams cost a short wait each, so they get fewer
TYPED_EXAMPLES = {name: 150 for name in METHODS} | {"Events": 50, "Telemetry": 60, "GetInfo": 60,
                                                      "ListSessions": 60}
RAW_EXAMPLES = 45
METADATA_EXAMPLES = 300

COUNTS: dict[str, Counter] = defaultdict(Counter)     # "typed GetTensor" -> status -> n
PROBLEMS: list[str] = []                              # all of the module's
MINE: list[str] = []                                  # the current test's
SETTINGS = dict(derandomize=True, deadline=None, database=None, print_blob=False,
                suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------------------- the server

class Fuzzed:
    """The server under fuzz, its users, and a pool of real sessions (paused, running, closed)."""

    def __init__(self, tmp):
        users = make_users(2, seed=11)
        self.a, self.b, self.admin = users
        args = ["--max-context", "64", "--max-request-mb", str(MAX_REQUEST_MB), "--lease-s", "600",
                "--tokens-file", write_tokens_file(tmp / "tokens", users)]
        self.srv = ServerProcess(*args, log_path=str(tmp / "server.log"))
        self.conn = Conn(self.srv.address, self.a.token, "fuzz-keeper")
        self.b_conn = Conn(self.srv.address, self.b.token, "fuzz-keeper-b")
        self.live: list[int] = []
        self.dead: list[int] = []
        self.b_ids: list[int] = []
        self.rng = random.Random(5)
        self.sent = 0
        self.refill()
        st_, s, _ = self.b_conn.call("CreateSession", pb.CreateSessionRequest(
            prompt_tokens=[5, 6, 7], max_new_tokens=2, breakpoints=[pb.Breakpoint(id=1, layer=3)]))
        if st_ == "OK":
            self.b_ids.append(s.id)

    def refill(self) -> None:
        """Keeps a few real sessions of user a around: paused at a breakpoint or on entry."""
        alive = []
        if self.live:
            st_, resp, _ = self.conn.call("ListSessions", pb.ListSessionsRequest())
            if st_ == "OK":
                have = {s.id for s in resp.sessions if s.state in (pb.SESSION_STATE_PAUSED, pb.SESSION_STATE_RUNNING)}
                alive = [i for i in self.live if i in have]
                self.dead += [i for i in self.live if i not in have]
        self.live = alive
        while len(self.live) < 4:
            r = self.rng
            req = pb.CreateSessionRequest(prompt_tokens=[r.randrange(3, 512) for _ in range(r.randint(2, 8))],
                                          max_new_tokens=r.randint(2, 4), context=32, stop_on_entry=r.random() < 0.5,
                                          breakpoints=[pb.Breakpoint(id=1, layer=r.randrange(40),
                                                                     point=r.choice([1, 2, 3]))])
            st_, s, det = self.conn.call("CreateSession", req)
            if st_ != "OK":
                _problem(f"keeper could not create a session: {st_} {det}")
                break
            self.live.append(s.id)
        time.sleep(0.05)   # let them reach their stop

    def session_ids(self):
        return self.live + self.dead[-8:] + self.b_ids

    def tick(self) -> None:
        self.sent += 1
        if self.sent % 40 == 0:
            self.refill()
        if self.sent % 10 == 0 and not self.srv.alive():
            pytest.fail(f"the server died (exit {self.srv.proc.returncode}):\n{self.srv.output()[-3000:]}")

    def close(self):
        self.conn.close()
        self.b_conn.close()
        return self.srv.stop()


@pytest.fixture(scope="module")
def fz(tmp_path_factory):
    if not server_supports("--tokens-file"):
        pytest.skip("a server without owners and tokens files")
    f = Fuzzed(tmp_path_factory.mktemp("fuzz"))
    yield f
    rc = f.close()
    assert rc == 0, f"server exit code {rc}:\n{f.srv.output()[-3000:]}"


# ---------------------------------------------------------------------------- strategies from descriptors

I32, I64 = (-(1 << 31), (1 << 31) - 1), (-(1 << 63), (1 << 63) - 1)
U32, U64 = (0, (1 << 32) - 1), (0, (1 << 64) - 1)
EDGE = [0, 1, -1, 2, 3, 39, 40, 41, 63, 64, 65, 511, 512, 1023, 1024, 1 << 20, (1 << 31) - 1, -(1 << 31)]
TENSOR_NAMES = ["hidden", "attn_out", "mlp_out", "q", "k", "v", "k_cache", "v_cache", "logits", "tokens", "$1", "$0",
                "$999999999999", "", "HIDDEN", "hidden\x00", "../hidden", "__class__"]
EXPRESSIONS = ["norm(hidden)", "hidden[0, :4]", "mean(attn_out)", "logits[-1, 99999]", "hidden[::0]", "1/0",
               "topk(logits, 100000)", "hidden ** 1e308", "zeros_like(k_cache) @ hidden", "x" * 3000,
               "((((((((((((((((((((1))))))))))))))))))))", "__import__('os')", "hidden[" * 200, "sum(tokens)",
               "hidden[None]", "norm(hidden, 7)", "hidden[-1000000000000000000000]", "clamp(hidden, 1, -1)"]
DTYPES = ["float32", "bfloat16", "float16", "int64", "int8", "bool", "", "float64", "complex64", "nope"]


def _ints(lo_hi, special=()):
    lo, hi = lo_hi
    edges = [v for v in EDGE + [lo, hi] + list(special) if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi), st.integers(-70, 1100).filter(lambda v: lo <= v <= hi))


def _string(name: str):
    long = st.text(min_size=300, max_size=4000)
    plain = st.text(max_size=40)
    if name == "expression" or name == "condition":
        return st.one_of(st.sampled_from(EXPRESSIONS), plain, long)
    if name in ("name", "tensor"):
        return st.one_of(st.sampled_from(TENSOR_NAMES), plain)
    if name == "dtype":
        return st.one_of(st.sampled_from(DTYPES), plain)
    if name == "hit_condition":
        return st.one_of(st.sampled_from(["5", ">= 2", "% 0", "% 3", "== -1", ">", "9" * 400]), plain)
    return st.one_of(plain, long)


def _repeated(f) -> bool:
    return f.is_repeated if hasattr(f, "is_repeated") else f.label == FD.LABEL_REPEATED


def field_strategy(f, fz: Fuzzed, depth: int):
    t = f.type
    if f.name == "session_id":
        real = st.integers(0, 1 << 16).map(lambda k: (fz.session_ids() or [1])[k % len(fz.session_ids() or [1])])
        # 8 in 10 a real one (hypothesis flattens nested one_of, so the weights are explicit)
        s = st.tuples(st.integers(0, 9), real, _ints(I64)).map(lambda t: t[1] if t[0] < 8 else t[2])
    elif t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        s = _ints(I32)
    elif t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        s = _ints(I64)
    elif t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        s = _ints(U32)
    elif t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        s = _ints(U64)
    elif t == FD.TYPE_BOOL:
        s = st.booleans()
    elif t == FD.TYPE_DOUBLE:
        s = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, 1e-3, 10.0, 100.0]))
    elif t == FD.TYPE_FLOAT:
        s = st.floats(width=32)
    elif t == FD.TYPE_STRING:
        s = _string(f.name)
    elif t == FD.TYPE_BYTES:
        s = st.one_of(st.binary(max_size=64), st.binary(min_size=500, max_size=20_000),
                      st.sampled_from([b"\0" * (24 * 128 * 4), b"\xff" * 512]))
    elif t == FD.TYPE_ENUM:
        s = st.one_of(st.sampled_from(list(f.enum_type.values_by_number)), _ints(I32))
    elif t == FD.TYPE_MESSAGE:
        if depth >= 2:
            return None
        s = message_strategy(f.message_type, fz, depth + 1)
    else:   # groups: none in this proto
        return None
    if _repeated(f):
        s = st.lists(s, max_size=6 if t != FD.TYPE_MESSAGE else 4)
    return s


def message_strategy(desc, fz: Fuzzed, depth: int = 0):
    cls = message_factory.GetMessageClass(desc)
    fields, required = {}, {}
    for f in desc.fields:
        s = field_strategy(f, fz, depth)
        if s is not None:
            (required if f.name == "session_id" else fields)[f.name] = s   # mostly a real one

    def build(values: dict):
        msg = cls()
        for name, v in values.items():
            f = desc.fields_by_name[name]
            target = getattr(msg, name) if _repeated(f) or f.type == FD.TYPE_MESSAGE else None
            if _repeated(f):
                if f.type == FD.TYPE_MESSAGE:
                    for x in v:
                        target.add().CopyFrom(x)
                else:
                    target.extend(v)
            elif f.type == FD.TYPE_MESSAGE:
                target.CopyFrom(v)
            else:
                setattr(msg, name, v)
        return msg
    return st.fixed_dictionaries(required, optional=fields).map(build)


# ---------------------------------------------------------------------------- sending

def _send(fz: Fuzzed, method: str, req, md, raw: bool = False):
    """(status name, details, the response or first chunk). Infinite streams: the first message
    within a short wait (DEADLINE_EXCEEDED from this client's own deadline = an open, quiet stream)."""
    ch = fz.conn.channel
    path = f"/djinn.v1.Djinn/{method}"
    m = METHODS[method]
    ser = None if raw else (lambda x: x.SerializeToString())
    des = message_factory.GetMessageClass(m.output_type).FromString
    infinite = method in ("Events", "Telemetry")
    timeout = 0.25 if infinite else 30
    try:
        if method in STREAMING:
            call = ch.unary_stream(path, request_serializer=ser, response_deserializer=des)(req, metadata=md,
                                                                                               timeout=timeout)
            first = None
            for i, msg in enumerate(call):
                first = first or msg
                if infinite or i > 200:
                    call.cancel()
                    break
            return "OK", "", first
        resp = ch.unary_unary(path, request_serializer=ser, response_deserializer=des)(req, metadata=md,
                                                                                         timeout=timeout)
        return "OK", "", resp
    except grpc.RpcError as e:
        code = e.code()
        if code == grpc.StatusCode.CANCELLED and infinite:
            return "OK", "", None
        return code.name, e.details() or "", None


def _problem(what: str) -> None:
    PROBLEMS.append(what)
    MINE.append(what)


def _check(kind: str, method: str, status: str, details: str, token_ok: bool = True):
    COUNTS[f"{kind} {method}"][status] += 1
    if status == "UNKNOWN":
        _problem(f"{kind} {method}: UNKNOWN {details!r}")
    if status == "INTERNAL":
        _problem(f"{kind} {method}: INTERNAL {details!r}")
    if not token_ok and status != "UNAUTHENTICATED":
        _problem(f"{kind} {method}: a wrong token got {status} {details!r}")
    if status == "DEADLINE_EXCEEDED" and method not in ("Events", "Telemetry"):
        _problem(f"{kind} {method}: DEADLINE_EXCEEDED (30 s) {details!r}")


def _verdict() -> None:
    """This test's problems (each distinct one once, with how often it came)."""
    seen = Counter(MINE)
    MINE.clear()
    assert not seen, f"{sum(seen.values())} bad answers:\n" + "\n".join(f"{n} x {p}" for p, n in seen.most_common(20))


def _after(fz: Fuzzed, method: str, status: str, resp) -> None:
    """Clean up what a valid random request created: sessions run the worker for nothing."""
    if method == "CreateSession" and status == "OK" and resp is not None:
        fz.conn.call("CloseSession", pb.SessionRef(session_id=resp.id))


# ---------------------------------------------------------------------------- the fuzz tests

@pytest.mark.parametrize("method", sorted(METHODS))
def test_typed_requests(fz, method):
    m = METHODS[method]
    strat = message_strategy(m.input_type, fz)
    whos = st.sampled_from([(fz.a, "fuzz"), (fz.a, "fuzz"), (fz.a, "fuzz"), (fz.a, "fuzz-2"), (fz.b, "fuzz-b"),
                            (fz.admin, "fuzz-admin")])

    @settings(max_examples=TYPED_EXAMPLES[method], **SETTINGS)
    @given(req=strat, who=whos)
    def run(req, who):
        fz.tick()
        status, details, resp = _send(fz, method, req, metadata(who[0].token, who[1]))
        _check("typed", method, status, details)
        _after(fz, method, status, resp)
    run()
    _verdict()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_raw_bytes(fz, method):
    cls = message_factory.GetMessageClass(METHODS[method].input_type)
    valid = message_strategy(METHODS[method].input_type, fz).map(lambda m: m.SerializeToString())

    def mutate(args):
        data, flips, cut = args
        b = bytearray(data)
        for pos, val in flips:
            if b:
                b[pos % len(b)] = val
        return bytes(b[:cut]) if cut is not None else bytes(b)
    mutated = st.tuples(valid, st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=4),
                        st.one_of(st.none(), st.integers(0, 64))).map(mutate)
    data = st.one_of(st.binary(max_size=256), st.binary(min_size=1000, max_size=50_000), mutated,
                     st.sampled_from([b"\x0a\xff\xff\xff\xff\x0f", b"\x08" + b"\xff" * 10 + b"\x01", b"\x12\x00" * 5000]))

    @settings(max_examples=RAW_EXAMPLES, **SETTINGS)
    @given(data=data, wrong_token=st.integers(0, 5).map(lambda k: k == 0))
    def run(data, wrong_token):
        fz.tick()
        try:
            parsed = cls.FromString(data)
            parses = True
        except Exception:  # noqa: BLE001 - protobuf's DecodeError (and friends)
            parsed, parses = None, False
        if wrong_token:   # the token is checked before the request is decoded
            status, details, _ = _send(fz, method, data, metadata("not-" + fz.a.token, "fuzz-raw"), raw=True)
            _check("raw, wrong token,", method, status, details, token_ok=False)
            return
        status, details, resp = _send(fz, method, data, metadata(fz.a.token, "fuzz-raw"), raw=True)
        _check("raw", method, status, details)
        if not parses and status != "INVALID_ARGUMENT":
            _problem(f"raw {method}: bytes that do not parse as {cls.DESCRIPTOR.name} got {status} {details!r}")
        if parses and status == "OK" and method == "CreateSession" and resp is not None:
            _after(fz, method, status, resp)
    run()
    _verdict()


def test_random_metadata(fz):
    printable = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)
    token = st.one_of(st.none(), st.sampled_from([fz.a.token, fz.b.token, fz.admin.token, fz.a.token + "x",
                                                  fz.a.token[:-1], fz.a.token.upper(), ""]), printable)
    client = st.one_of(st.none(), st.sampled_from(["w1", "a" * 64, "a" * 65, "bad id", "é", "x/y", "::", ""]),
                       printable)
    extra = st.lists(st.tuples(st.sampled_from(["x-djinn-token", "x-djinn-client", "x-other", "authorization"]),
                               printable), max_size=3)
    method = st.sampled_from(["GetInfo", "ListSessions", "GetSession", "Continue", "Evaluate", "Detach", "Telemetry"])

    @settings(max_examples=METADATA_EXAMPLES, **SETTINGS)
    @given(token=token, client=client, extra=extra, method=method)
    def run(token, client, extra, method):
        fz.tick()
        md = metadata(token, client) + [(k, v) for k, v in extra]
        tokens = [v for k, v in md if k == "x-djinn-token"]
        known = {fz.a.token, fz.b.token, fz.admin.token}
        # several x-djinn-token values: the server may take either; only all-wrong must be refused
        token_ok = bool(tokens) and any(t in known for t in tokens)
        sid = (fz.live or [1])[0]
        req = {"GetInfo": pb.GetInfoRequest(), "ListSessions": pb.ListSessionsRequest(),
               "GetSession": pb.SessionRef(session_id=sid), "Continue": pb.SessionRef(session_id=sid),
               "Evaluate": pb.EvaluateRequest(session_id=sid, expression="norm(hidden)"),
               "Detach": pb.DetachRequest(), "Telemetry": pb.TelemetryRequest(interval_ms=1000)}[method]
        try:
            status, details, resp = _send(fz, method, req, md)
        except ValueError as e:   # grpc refuses to send some header values; nothing reached the server
            COUNTS["metadata (not sendable)"][type(e).__name__] += 1
            return
        _check("metadata", method, status, details, token_ok=token_ok or len(set(tokens)) > 1)
        if not token_ok and len(set(tokens)) <= 1 and status != "UNAUTHENTICATED":
            _problem(f"metadata {md!r}: {status}")
        if method == "GetInfo" and status == "OK" and len(tokens) == 1:
            cids = [v for k, v in md if k == "x-djinn-client"]
            import re
            want = cids[0] if len(cids) == 1 and re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", cids[0]) else None
            if want is not None and resp.client_id != want:
                _problem(f"GetInfo with x-djinn-client {want!r} says client_id {resp.client_id!r}")
    run()
    _verdict()


def test_request_over_the_limit_is_refused_before_it_is_read(fz):
    big = pb.SetTensorRequest(session_id=(fz.live or [1])[0], name="hidden", dtype="float32",
                              data=b"\0" * ((MAX_REQUEST_MB << 20) + 1000))
    for method, req in (("SetTensor", big), ("Evaluate", pb.EvaluateRequest(expression="1" * ((MAX_REQUEST_MB << 20) + 10)))):
        status, details, _ = _send(fz, method, req, metadata(fz.a.token, "fuzz"))
        _check("oversized", method, status, details)
        assert status == "RESOURCE_EXHAUSTED", (method, status, details)
    # and with a wrong token, big or not: UNAUTHENTICATED (or the size refusal, which comes first in grpc)
    status, details, _ = _send(fz, "SetTensor", big, metadata("wrong-token", "fuzz"))
    assert status in ("UNAUTHENTICATED", "RESOURCE_EXHAUSTED"), (status, details)
    _verdict()


def test_zz_a_normal_session_still_works_and_equals_its_reference(fz, capsys):
    assert fz.srv.alive()
    c = Conn(fz.srv.address, fz.a.token, "fuzz-after")
    # what the fuzz left behind must not stop anything: close every session a still has
    for sid in list(fz.live):
        c.call("CloseSession", pb.SessionRef(session_id=sid))
    prompt = [17, 99, 250, 3, 411, 87, 6]
    events = c.stub.Events(pb.EventsRequest(), metadata=c.md)
    time.sleep(0.1)
    st_, s, det = c.call("CreateSession", pb.CreateSessionRequest(
        prompt_tokens=prompt, max_new_tokens=4, breakpoints=[pb.Breakpoint(id=1, layer=10),
                                                             pb.Breakpoint(id=2, layer=30, point=pb.STOP_POINT_ATTN)]))
    assert st_ == "OK", det
    stops, tokens, norms = [], None, []
    deadline = time.monotonic() + 120
    for ev in events:
        assert time.monotonic() < deadline, "the session did not finish"
        if ev.session_id != s.id:
            continue
        assert ev.kind not in (pb.EVENT_KIND_ERROR, pb.EVENT_KIND_CLOSED), ev
        if ev.kind == pb.EVENT_KIND_STOPPED:
            stops.append((ev.session.position.token_index, ev.session.position.layer))
            got = c.call("Evaluate", pb.EvaluateRequest(session_id=s.id, expression="norm(hidden)"))
            assert got[0] == "OK", got
            norms.append(((ev.session.position.token_index, ev.session.position.layer,
                           {1: "layer", 2: "attn", 3: "mlp"}[ev.session.position.point]), got[1].scalar))
            assert c.call("Continue", pb.SessionRef(session_id=s.id))[0] == "OK"
        elif ev.kind == pb.EVENT_KIND_FINISHED:
            tokens = list(ev.session.generated_tokens)
            break
    events.cancel()
    assert stops == [(k, l) for k in range(4) for l in (10, 30)]
    ref_tokens, ref_norms = References().run(prompt, 4, [p for p, _ in norms])
    assert tokens == ref_tokens
    assert all(ref_norms[p] == v for p, v in norms), (norms, ref_norms)
    assert c.call("CloseSession", pb.SessionRef(session_id=s.id))[0] == "OK"
    c.close()
    total = sum(sum(v.values()) for k, v in COUNTS.items())
    with capsys.disabled():
        print(f"\n[rpc fuzz] {total} inputs; by RPC and status:")
        for k in sorted(COUNTS):
            print(f"  {k:<36} {sum(COUNTS[k].values()):>5}  {dict(sorted(COUNTS[k].items()))}")
    assert fz.srv.alive()
    assert total >= 3000
