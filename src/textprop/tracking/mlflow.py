"""MLflow: the config as parameters, scores and usage per step as metrics, the accepted
revisions, the final prompts and the HTML report as artifacts (`pip install
'textprop[mlflow]'`; a `file:` URI needs no server)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from textprop.errors import ConfigError
from textprop.tracking import flat_params, per_role
from textprop.train.events import RunCallback

META_KEY = "mlflow_run_id"


class MLflowTracker(RunCallback):
    def __init__(self, uri: str, experiment: str, run_dir: Path,
                 params: dict[str, str] | None = None, run_name: str | None = None) -> None:
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError("MLflow tracking needs the mlflow extra: pip install "
                              "'textprop[mlflow]'", field="tracking.mlflow") from None
        self._Metric, self._Param = Metric, Param
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 keeps its file store in maintenance mode behind this opt-in; the
            # config asked for a folder, so opt in (setdefault: a user's "false" stands).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        self.run_dir = Path(run_dir)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (found.experiment_id if found is not None
                              else self.client.create_experiment(experiment))
        previous = self._previous_run()
        self._remembered = bool(previous)
        if previous:  # a resumed run continues its MLflow run
            self.run_id = previous
        else:
            run = self.client.create_run(self.experiment_id, run_name=run_name,
                                         tags={"textprop.run_dir": str(self.run_dir)})
            self.run_id = run.info.run_id
            items = [self._Param(k[:250], v[:6000]) for k, v in (params or {}).items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i:i + 100])
        self.totals: dict[str, dict[str, float]] = {}

    @classmethod
    def from_config(cls, config: Any, run_dir: Path) -> MLflowTracker:
        t = config.tracking
        params = flat_params(config.model_dump(exclude={"tracking"}))
        return cls(t.mlflow, t.experiment or config.run.name, run_dir, params,
                   run_name=Path(run_dir).name)

    # --- the run id in the ledger, for resume ---------------------------------------------
    def _ledger(self) -> Any:
        from textprop.ledger import Ledger

        return Ledger.in_run(self.run_dir)

    def _previous_run(self) -> str | None:
        if not (self.run_dir / "ledger.sqlite3").exists():
            return None
        ledger = self._ledger()
        try:
            return ledger.meta().get(META_KEY)
        finally:
            ledger.close()

    def _remember(self) -> None:
        ledger = self._ledger()
        try:
            ledger.set_meta(**{META_KEY: self.run_id})
        finally:
            ledger.close()

    # --- events --------------------------------------------------------------------------
    def _log(self, metrics: dict[str, float | None], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [self._Metric(k, float(v), now, step) for k, v in metrics.items()
                 if v is not None]
        for i in range(0, len(batch), 500):
            self.client.log_batch(self.run_id, metrics=batch[i:i + 500])

    def on_call(self, call: dict[str, Any], step: int) -> None:
        for role, row in per_role([call]).items():
            total = self.totals.setdefault(role, {"calls": 0, "tokens": 0, "cost_usd": 0.0})
            for k, v in row.items():
                total[k] += v

    def on_step(self, record: Any, planned: int | None) -> None:
        if not self._remembered:  # the ledger exists by now, its meta written
            self._remember()
            self._remembered = True
        metrics: dict[str, float | None] = {
            "batch_score": record.batch_score, "val_score": record.val_score,
            "best_val_score": record.best_val_score, "test_score": record.test_score,
            "accepted": 1.0 if record.status in ("accepted", "final") else 0.0}
        for role, row in per_role(record.calls).items():
            for k, v in row.items():
                metrics[f"{k}.{role}"] = v
        for role, row in self.totals.items():
            for k, v in row.items():
                metrics[f"run_{k}.{role}"] = v
        self._log(metrics, record.step)
        folder = f"revisions/step_{record.step:04d}"
        accepted = [c for c in record.candidates if c.status == "accepted"]
        for candidate in accepted:  # a search: the candidate that joined the pool
            for name, value in candidate.values.items():
                self.client.log_text(self.run_id, value,
                                     f"{folder}/candidate_{candidate.id}/{name}.txt")
        if not accepted and record.status in ("accepted", "final"):
            for name, value in record.values.items():
                self.client.log_text(self.run_id, value, f"{folder}/{name}.txt")

    def on_run_finished(self, result: Any) -> None:
        self._log({"final.best_val": result.best_val, "final.test": result.final_test,
                   "final.baseline_val": result.baseline_val,
                   "final.baseline_test": result.baseline_test,
                   **{f"run_{k}.{role}": v for role, row in self.totals.items()
                      for k, v in row.items()}}, result.steps)
        for name, value in result.values.items():
            self.client.log_text(self.run_id, value, f"final/{name}.txt")
        self.client.set_tag(self.run_id, "textprop.status", result.status)
        if result.status != "awaiting_approval":
            from textprop.report import write_report

            report = write_report(self.run_dir)
            self.client.log_artifact(self.run_id, str(report))
            self.client.set_terminated(self.run_id, "FINISHED")
