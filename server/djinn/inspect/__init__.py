"""Pure helpers for inspecting a paused forward pass: expressions and tensor utilities."""
from .expr import ExprError, Outcome, evaluate, evaluate_outcome, names_used, parse
from .tensors import (DTYPES, MAX_VALUES, SliceError, dtype_from_name, dtype_name,
                      format_summary_line, format_value, format_values, from_bytes, iter_chunks,
                      parse_slice, summarize, to_bytes)

__all__ = ["ExprError", "Outcome", "evaluate", "evaluate_outcome", "names_used", "parse", "DTYPES",
           "MAX_VALUES", "SliceError", "dtype_from_name", "dtype_name", "format_summary_line",
           "format_value", "format_values", "from_bytes", "iter_chunks", "parse_slice", "summarize",
           "to_bytes"]
