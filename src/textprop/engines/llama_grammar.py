"""Schemas that llama.cpp's grammars can hold.

llama.cpp (in process, and behind `llama-server` / `python -m llama_cpp.server`) turns a
JSON schema into a grammar in which a bounded string (`maxLength: N`) or array
(`maxItems: N`) becomes N nested optional rules. Its grammar parser refuses more than
1000 of them ("number of rules that are going to be repeated multiplied by the new
repetition exceeds sane defaults"), and llama-cpp-python 0.3.36 then crashes with a
segmentation fault: the user's process, or the server, dies. Measured on the pinned version:
1000 works, 1001 crashes, for strings and arrays alike.

So before a schema reaches llama.cpp, larger bounds are lowered to the limit. The reply then
closes its JSON at 1000 characters (or items) instead of running on until max_tokens cuts
it; callers that need more set no bound at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_GRAMMAR_REPETITION = 1000
_BOUNDS = ("maxLength", "maxItems")


def llama_cpp_schema(schema: Any) -> Any:
    """A JSON-ready copy of `schema` with every maxLength/maxItems at most the limit."""
    if isinstance(schema, Mapping):
        copy = {str(k): llama_cpp_schema(v) for k, v in schema.items()}
        for bound in _BOUNDS:
            value = copy.get(bound)
            if isinstance(value, int) and value > MAX_GRAMMAR_REPETITION:
                copy[bound] = MAX_GRAMMAR_REPETITION
        return copy
    if isinstance(schema, list | tuple):
        return [llama_cpp_schema(v) for v in schema]
    return schema
