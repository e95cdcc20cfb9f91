"""Reading a finished (or running) run's ledger from Python: `textprop.open_run(path)`.

    run = textprop.open_run("runs/chain")
    run.steps(); run.revisions(step=1); run.candidates(); run.losses(step=1)
    run.step_outputs(step=1)   # each pipeline step's input, output, feedback per example
    run.history("plan")        # one parameter's value, proposal and feedback per step
    run.usage()                # calls, tokens, cost per role
    run.values                 # the final values
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textprop.errors import ConfigError
from textprop.ledger import CandidateRow, Ledger


class Run:
    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        file = path if path.name == Ledger.FILE_NAME else path / Ledger.FILE_NAME
        if not file.exists():
            raise ConfigError("not a run folder (no ledger.sqlite3)", source=str(path))
        self.path, self.ledger = file.parent, Ledger(file)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.ledger.close()

    @property
    def meta(self) -> dict[str, Any]:
        return self.ledger.meta()

    @property
    def status(self) -> str:
        return str(self.meta.get("status", "running"))

    @property
    def values(self) -> dict[str, str]:
        """The final values (or those in force after the last recorded step)."""
        final = self.meta.get("final", {}).get("values")
        last = self.ledger.last_step()
        return final or (last["values"] if last else {})

    def steps(self) -> list[dict[str, Any]]:
        return self.ledger.steps()

    def revisions(self, step: int | None = None) -> list[dict[str, Any]]:
        return self.ledger.revisions(step)

    def losses(self, step: int | None = None) -> list[dict[str, Any]]:
        return self.ledger.losses(step)

    def evaluations(self, step: int | None = None) -> list[dict[str, Any]]:
        return self.ledger.evaluations(step)

    def candidates(self) -> list[CandidateRow]:
        return self.ledger.candidates()

    def step_outputs(self, step: int | None = None) -> list[dict[str, Any]]:
        return self.ledger.step_outputs(step)

    def usage(self) -> dict[str, dict[str, float]]:
        return self.ledger.usage_by_role()

    def history(self, name: str) -> list[dict[str, Any]]:
        """Per step: its status, `name`'s value in force after it, the proposal and the
        feedback behind it (None / "" where the step did not revise `name`)."""
        steps = self.steps()
        if not steps or name not in steps[0]["values"]:
            known = ", ".join(sorted(steps[0]["values"])) if steps else "none"
            raise ConfigError(f"no parameter {name!r} (known: {known})", source=str(self.path))
        revisions = {r["step"]: r for r in self.revisions() if r["name"] == name}
        rows = []
        for s in steps:
            rev = revisions.get(s["step"])
            rows.append({"step": s["step"], "status": s["status"],
                         "value": s["values"].get(name, ""),
                         "proposal": rev["after"] if rev else None,
                         "update_status": rev["update_status"] if rev else None,
                         "feedback": rev["feedback"] if rev else "", "reason": s["reason"]})
        return rows


def open_run(path: str | Path) -> Run:
    return Run(path)
