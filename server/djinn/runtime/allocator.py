"""The CUDA allocator setting every Djinn process runs with (the server, the eager baseline, the
benchmarks), so that comparisons between them are fair. No torch import: it must run before
CUDA's first allocation, and importing it costs nothing."""
from __future__ import annotations

import os

ALLOC_CONF = "expandable_segments:True"


def use_djinn_allocator_settings(device: str) -> str | None:
    """Off the CPU, expandable segments (fewer fragmentation surprises under a hard allocator
    cap); an explicit PYTORCH_CUDA_ALLOC_CONF wins. Returns what is in effect."""
    if device != "cpu":
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", ALLOC_CONF)
    return os.environ.get("PYTORCH_CUDA_ALLOC_CONF")
