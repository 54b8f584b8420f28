"""Diagnostic (device): where a session's numbers first differ between running alone and batched,
with graphs on and off. Prints the first differing (pass, layer, point) and the max difference."""
import sys
import torch
sys.path.insert(0, "server"); sys.path.insert(0, "server/tests")
torch.set_grad_enabled(False)
from test_batching import _model, _session, prompt  # noqa: E402
from djinn.runtime.engine import Engine  # noqa: E402
from djinn.runtime.session import ATTN, FINISHED, LAYER, MLP  # noqa: E402

model, tok, dev, dtype = _model("cuda")
for graphs in (False, True):
    eng = Engine(model, tok, dev, dtype, 128, batch_rows=4, graphs=graphs)
    prompts = [prompt(i, 6 + 3 * i) for i in range(3)]
    runs = []
    for batched in (False, True):
        ss = [_session(eng, p, 3) for p in prompts]
        for s in ss:
            eng.begin(s)
            while s.pass_index == 0:
                eng.advance(s)
            eng.settle(s)
        log = []
        while ss[0].state != FINISHED:
            if batched:
                eng.advance_batch(ss)
            else:
                for s in ss:
                    eng.advance(s)
                    eng.settle(s)
            for i, s in enumerate(ss):
                if s.state != FINISHED:
                    log.append(((i, s.pass_index, s.layer, s.point), {k: v.float().cpu().clone() for k, v in s.memory.acts.items()}))
        runs.append(log)
    first = None
    for (ka, a), (kb, b) in zip(*runs):
        assert ka == kb
        bad = {k: float((a[k] - b[k]).abs().max()) for k in a if k in b and not torch.equal(a[k], b[k])}
        if bad:
            first = (ka, bad)
            break
    print(f"graphs={graphs}: first difference alone vs batched: {first}")
    # same block position, alone, twice: run to run
