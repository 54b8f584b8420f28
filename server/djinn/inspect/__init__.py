"""Pure helpers for inspecting a paused forward pass: expressions and tensor utilities."""
from .expr import ExprError, evaluate, names_used, parse
from .tensors import (DTYPES, SliceError, dtype_from_name, dtype_name, format_summary_line,
                      from_bytes, iter_chunks, parse_slice, summarize, to_bytes)

__all__ = ["ExprError", "evaluate", "names_used", "parse", "DTYPES", "SliceError",
           "dtype_from_name", "dtype_name", "format_summary_line", "from_bytes", "iter_chunks",
           "parse_slice", "summarize", "to_bytes"]
