"""Kept for imports written before pipelines had kinds: see `textprop.train.pipelines`."""

from textprop.train.pipelines.base import Pipeline
from textprop.train.pipelines.prompt import DEFAULT_ROLE, PromptPipeline

__all__ = ["DEFAULT_ROLE", "Pipeline", "PromptPipeline"]
