"""What a run tells the world while it runs: a small callback interface.

The CLI's progress display is one `RunCallback`; tracking integrations are others. A
callback that raises does not stop the run: the error is reported once as a warning.

An LLM call's prompt and reply reach only a callback that sets `wants_call_content`: the
engines' meters copy the text only while such a callback is registered, and `Events`
strips it from the call for every other callback.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from textprop.engines.metering import CONTENT_FIELDS

if TYPE_CHECKING:
    from textprop.ledger import CandidateRow, EvaluationRow, StepRecord


class RunCallback:
    """Override the events you care about; every method is a no-op here."""

    # True: `on_call` also gets the call's `messages`, `reply` and `finish_reason`.
    wants_call_content: bool = False

    def on_message(self, text: str) -> None:
        """A line of progress in words ("baseline: validation 0.250")."""

    def on_evaluation_progress(self, split: str, done: int, total: int) -> None:
        """One more example of an evaluation was scored."""

    def on_evaluation(self, split: str, row: EvaluationRow) -> None:
        """An evaluation of a whole split (or a search's validation part) finished."""

    def on_candidate_proposed(self, candidate: CandidateRow) -> None:
        """A search made a new candidate (a mutation or a merge), not yet gated."""

    def on_candidate_gated(self, candidate: CandidateRow, passed: bool) -> None:
        """The candidate ran on its minibatch (or subsample) and passed the gate or not."""

    def on_candidate_accepted(self, candidate: CandidateRow) -> None:
        """The candidate was validated and joined the pool."""

    def on_step(self, record: StepRecord, planned: int | None) -> None:
        """A step was written to the ledger; `planned` is the number of steps, if known."""

    def on_call(self, call: dict[str, Any], step: int) -> None:
        """An LLM call ended (a `CallRecord` as a dict: role, engine, model, tokens, cost,
        latency, cached, ok, started_at, and with `wants_call_content` the messages, reply
        and finish_reason); `step` is the step it is filed under."""

    def on_budget(self, used: dict[str, float], limits: dict[str, float | None]) -> None:
        """What the run has spent so far (calls, metric_calls, tokens, cost_usd)."""

    def on_run_finished(self, result: Any) -> None:
        """The run ended (finished, stopped early, or waiting for approval)."""


class Events(RunCallback):
    """Fans every event out to the registered callbacks, in registration order."""

    def __init__(self, callbacks: Iterable[RunCallback] = ()) -> None:
        self.callbacks: list[RunCallback] = list(callbacks)
        self._failed: set[int] = set()

    def add(self, callback: RunCallback) -> None:
        self.callbacks.append(callback)

    @property
    def wants_call_content(self) -> bool:
        """Whether a registered callback asked for the calls' prompts and replies."""
        return any(getattr(c, "wants_call_content", False) for c in self.callbacks)

    def _emit(self, name: str, *args: Any) -> None:
        for callback in self.callbacks:
            self._send(callback, name, *args)

    def _send(self, callback: RunCallback, name: str, *args: Any) -> None:
        try:
            getattr(callback, name)(*args)
        except Exception as error:  # a broken tracker must not end a paid-for run
            if id(callback) not in self._failed:
                self._failed.add(id(callback))
                warnings.warn(f"run callback {type(callback).__name__}.{name} failed: "
                              f"{error!r}; it keeps receiving events", stacklevel=3)

    def on_call(self, call: dict[str, Any], step: int) -> None:
        bare = {k: v for k, v in call.items() if k not in CONTENT_FIELDS}
        for callback in self.callbacks:
            self._send(callback, "on_call",
                       call if getattr(callback, "wants_call_content", False) else bare, step)


def _forwarder(name: str) -> Any:
    def forward(self: Events, *args: Any) -> None:
        self._emit(name, *args)
    forward.__name__ = name
    return forward


for _name in [n for n in vars(RunCallback) if n.startswith("on_") and n != "on_call"]:
    setattr(Events, _name, _forwarder(_name))


class FunctionCallbacks(RunCallback):
    """The Trainer's older keyword hooks (`progress`, `counter`) as a callback."""

    def __init__(self, progress: Any = None, counter: Any = None) -> None:
        self._progress, self._counter = progress, counter

    def on_message(self, text: str) -> None:
        if self._progress:
            self._progress(text)

    def on_evaluation_progress(self, split: str, done: int, total: int) -> None:
        if self._counter:
            self._counter(split, done, total)
