"""Report a run to an experiment tracker: each tracker is a `RunCallback` built from the
config's `[tracking]` table.

    [tracking]
    mlflow = "file:./mlruns"        # pip install 'textprop[mlflow]'
    otlp = "http://localhost:4318/v1/traces"   # pip install 'textprop[otel]'
    otlp_content = false            # true: the spans also carry prompts and replies

Another tracker is a small adapter: a factory `(config, run_dir) -> RunCallback` registered
with `register_tracker("name", factory)` and switched on by `[tracking] name = ...` (a
field of `TrackingSection`) or by passing the callback to `build_trainer(callbacks=...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textprop.train.events import RunCallback

TrackerFactory = Callable[[Any, Path], RunCallback]


def _mlflow(config: Any, run_dir: Path) -> RunCallback:
    from textprop.tracking.mlflow import MLflowTracker

    return MLflowTracker.from_config(config, run_dir)


def _otlp(config: Any, run_dir: Path) -> RunCallback:
    from textprop.tracking.otel import OTelTracker

    return OTelTracker.from_config(config, run_dir)


TRACKERS: dict[str, TrackerFactory] = {"mlflow": _mlflow, "otlp": _otlp}


def register_tracker(kind: str, factory: TrackerFactory) -> None:
    TRACKERS[kind] = factory


def build_trackers(config: Any, run_dir: Path) -> list[RunCallback]:
    """The trackers `config.tracking` switches on, in the table's order."""
    tracking = getattr(config, "tracking", None)
    if tracking is None:
        return []
    return [factory(config, Path(run_dir)) for kind, factory in TRACKERS.items()
            if getattr(tracking, kind, None)]


def flat_params(data: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as `section.key -> str` parameters (lists as JSON)."""
    import json

    out: dict[str, str] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flat_params(value, f"{prefix}{key}."))
    else:
        out[prefix.rstrip(".")] = (json.dumps(data) if isinstance(data, list | tuple)
                                   else str(data))
    return out


def per_role(calls: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Calls, tokens and cost per role (and "total") of a step's calls."""
    out: dict[str, dict[str, float]] = {}
    for call in calls:
        for role in (call.get("role") or "other", "total"):
            row = out.setdefault(role, {"calls": 0, "tokens": 0, "cost_usd": 0.0})
            row["calls"] += 1
            if not call.get("cached"):
                row["tokens"] += (call.get("input_tokens") or 0) + (call.get("output_tokens")
                                                                     or 0)
            row["cost_usd"] += call.get("cost_usd") or 0.0
    return out
