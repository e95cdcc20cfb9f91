"""Bounds llama.cpp's grammar parser cannot hold are lowered before a schema reaches it.

Above 1000 repetitions llama-cpp-python 0.3.36 segfaults (measured: the B2 benchmark's
llama.cpp server died on a feedback schema with maxLength 1104); the real model's side of
this is in tests/integration/test_local_model.py.
"""

from __future__ import annotations

from types import MappingProxyType

from textprop.engines.llama_grammar import MAX_GRAMMAR_REPETITION, llama_cpp_schema
from textprop.feedback import feedback_schema, max_chars_for


def test_the_limit_is_the_one_measured_on_the_pinned_llama_cpp() -> None:
    assert MAX_GRAMMAR_REPETITION == 1000


def test_long_string_and_array_bounds_are_lowered_at_any_depth() -> None:
    schema = {"type": "object", "properties": {
        "feedback": {"type": "string", "maxLength": 1104},
        "notes": {"type": "array", "maxItems": 5000,
                  "items": {"type": "string", "maxLength": 2001}}}}
    assert llama_cpp_schema(schema) == {"type": "object", "properties": {
        "feedback": {"type": "string", "maxLength": 1000},
        "notes": {"type": "array", "maxItems": 1000,
                  "items": {"type": "string", "maxLength": 1000}}}}


def test_bounds_within_the_limit_and_other_keys_are_kept() -> None:
    schema = {"type": "object", "required": ["maxLength"], "properties": {
        "maxLength": {"type": "string", "maxLength": 1000, "minLength": 3},
        "tags": {"type": "array", "maxItems": 4, "items": {"enum": ["a", "b"]}}}}
    assert llama_cpp_schema(schema) == schema


def test_the_callers_schema_is_not_changed_and_read_only_mappings_work() -> None:
    inner = {"type": "string", "maxLength": 5000}
    schema = MappingProxyType({"type": "object", "properties": MappingProxyType(
        {"feedback": inner})})
    lowered = llama_cpp_schema(schema)
    assert lowered["properties"]["feedback"]["maxLength"] == 1000
    assert inner["maxLength"] == 5000


def test_feedback_at_384_tokens_asks_more_than_llama_cpp_can_hold() -> None:
    """Why this exists: the feedback bound for max_tokens=384 is past the limit."""
    schema = feedback_schema(max_chars_for(384))
    assert schema["properties"]["feedback"]["maxLength"] == 1104
    assert llama_cpp_schema(schema)["properties"]["feedback"]["maxLength"] == 1000
