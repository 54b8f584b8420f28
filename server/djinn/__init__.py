"""Djinn: many paused LLM debugging sessions sharing one GPU under a VRAM budget."""
__version__ = "0.1.0"
