"""Metrics: score a prediction in [0, 1] and explain the score in words usable as feedback.

    metric = get_metric("numeric")          # or "exact_match", "contains", "module:function"
    result = metric.score("Answer: 10", example)
    result.score, result.explanation        # 0.0, "expected 7, got 10"

`LLMJudge(engine, instruction)` grades with an LLM when no string comparison can.
"""

from textprop.metrics.answer import marked_answer
from textprop.metrics.base import Metric, MetricResult
from textprop.metrics.function import FunctionMetric
from textprop.metrics.judge import JUDGE_SCHEMA, LLMJudge
from textprop.metrics.numeric import (
    NumericMatch,
    find_numbers,
    format_number,
    numeric_match,
    parse_number,
)
from textprop.metrics.registry import BUILTIN_METRICS, get_metric, load_metric
from textprop.metrics.text import Contains, ExactMatch, contains, exact_match

__all__ = [
    "BUILTIN_METRICS", "JUDGE_SCHEMA", "Contains", "ExactMatch", "FunctionMetric", "LLMJudge",
    "Metric", "MetricResult", "NumericMatch", "contains", "exact_match", "find_numbers",
    "format_number", "get_metric", "load_metric", "marked_answer", "numeric_match",
    "parse_number",
]
