"""The run ledger: an SQLite record of every step of an optimization run.

It is the run's paper trail and its checkpoint at once: each step is written in one
transaction (values before and after, the feedback that drove the change, the losses, the
scores, the decision and why, the calls made), so a run killed at any moment resumes from
the last committed step and nothing accepted is lost.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from textprop.errors import StorageError

F = TypeVar("F", bound=Callable[..., Any])

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
    step INTEGER PRIMARY KEY,          -- 0 is the baseline evaluation
    epoch INTEGER NOT NULL,
    batch TEXT NOT NULL,               -- JSON list of example ids
    batch_score REAL,
    val_score REAL,
    best_val_score REAL,               -- the validation score to beat after this step
    test_score REAL,
    status TEXT NOT NULL,              -- baseline | accepted | rejected | pending | skipped
    reason TEXT NOT NULL,
    values_json TEXT NOT NULL,         -- parameter values in force after this step
    optimizer_json TEXT NOT NULL,      -- optimizer state (memory) after this step
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    search_json TEXT NOT NULL DEFAULT '{}'  -- the strategy's counters after this step
);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY,            -- 0 is the starting values
    step INTEGER NOT NULL,             -- the step that proposed it
    parents TEXT NOT NULL,             -- JSON list of candidate ids
    origin TEXT NOT NULL,              -- seed | mutation | merge
    changed TEXT NOT NULL,             -- JSON list of the parameter names it changed
    sample INTEGER NOT NULL,           -- which rewrite of its parent (0: greedy, k: seed + k)
    values_json TEXT NOT NULL,
    feedback TEXT NOT NULL,            -- JSON {parameter name: the feedback behind it}
    minibatch TEXT NOT NULL,           -- JSON list of example ids it was gated on
    gate_before REAL,                  -- the parent's minibatch (or subsample) score
    gate_after REAL,                   -- its own
    val_score REAL,                    -- mean over the search part of validation
    val_per_example TEXT,              -- JSON {example id: score}, when validated
    status TEXT NOT NULL,              -- seed | accepted | rejected | unchanged | duplicate
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS revisions (
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    role_description TEXT NOT NULL,
    before TEXT NOT NULL,
    after TEXT NOT NULL,               -- the proposal (kept even when the step was rejected)
    feedback TEXT NOT NULL,
    update_status TEXT NOT NULL,       -- updated | unchanged | no_feedback | unparseable
    update_reason TEXT NOT NULL,
    PRIMARY KEY (step, name)
);
CREATE TABLE IF NOT EXISTS losses (
    step INTEGER NOT NULL,
    example_id TEXT NOT NULL,
    prediction TEXT NOT NULL,
    target TEXT NOT NULL,
    score REAL NOT NULL,
    explanation TEXT NOT NULL,
    PRIMARY KEY (step, example_id)
);
CREATE TABLE IF NOT EXISTS evaluations (
    step INTEGER NOT NULL,
    split TEXT NOT NULL,               -- val | test | val_proposal
    score REAL NOT NULL,
    n INTEGER NOT NULL,
    per_example TEXT NOT NULL,         -- JSON {example id: score}
    PRIMARY KEY (step, split)
);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    step INTEGER NOT NULL,
    role TEXT NOT NULL,
    engine TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    latency_s REAL NOT NULL,
    cached INTEGER NOT NULL,
    ok INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS paid_calls (   -- every call sent to a provider, filed as it ends
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    engine TEXT NOT NULL,
    role TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS step_outputs (
    step INTEGER NOT NULL,
    example_id TEXT NOT NULL,          -- a batch (or a pareto parent's minibatch) example
    position INTEGER NOT NULL,         -- the call's place in the example's run, from 0
    name TEXT NOT NULL,                -- the pipeline step (a chain's step name)
    input TEXT NOT NULL,               -- the user message the step sent
    output TEXT NOT NULL,
    feedback TEXT NOT NULL,            -- the feedback the step's output received
    PRIMARY KEY (step, example_id, position)
);
CREATE TABLE IF NOT EXISTS approvals (
    step INTEGER PRIMARY KEY,
    decision TEXT NOT NULL,            -- approved | rejected
    decided_at REAL NOT NULL,
    note TEXT NOT NULL
);
"""


@dataclass
class Revision:
    name: str
    role_description: str
    before: str
    after: str
    feedback: str
    update_status: str
    update_reason: str = ""


@dataclass
class LossRow:
    example_id: str
    prediction: str
    target: str
    score: float
    explanation: str


@dataclass
class StepOutputRow:
    """What one pipeline step did for one example of a step's batch."""

    example_id: str
    position: int
    name: str
    input: str
    output: str
    feedback: str = ""


@dataclass
class EvaluationRow:
    split: str
    score: float
    per_example: dict[str, float]

    @property
    def n(self) -> int:
        return len(self.per_example)


@dataclass
class CandidateRow:
    """One candidate of a search: a full assignment of values, how it was made and scored."""

    id: int
    step: int
    parents: list[int]
    origin: str
    values: dict[str, str]
    status: str
    reason: str
    changed: list[str] = field(default_factory=list)
    sample: int = 0
    feedback: dict[str, str] = field(default_factory=dict)
    minibatch: list[str] = field(default_factory=list)
    gate_before: float | None = None
    gate_after: float | None = None
    val_score: float | None = None
    val_per_example: dict[str, float] | None = None


@dataclass
class StepRecord:
    step: int
    epoch: int
    status: str
    reason: str
    values: dict[str, str]
    optimizer_state: dict[str, Any]
    batch: list[str] = field(default_factory=list)
    batch_score: float | None = None
    val_score: float | None = None
    best_val_score: float | None = None
    test_score: float | None = None
    revisions: list[Revision] = field(default_factory=list)
    losses: list[LossRow] = field(default_factory=list)
    evaluations: list[EvaluationRow] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[CandidateRow] = field(default_factory=list)
    step_outputs: list[StepOutputRow] = field(default_factory=list)
    search_state: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    finished_at: float = 0.0


def storage_error(error: BaseException, path: Path, doing: str) -> StorageError:
    """One `StorageError` naming the file, for an sqlite3 or OS error met while `doing`."""
    text = str(error) if isinstance(error, sqlite3.Error) else (
        getattr(error, "strerror", None) or str(error))
    errno_ = getattr(error, "errno", None)
    if "not a database" in text or "malformed" in text:
        why = "the file is damaged or is not a ledger (not an SQLite database)"
    elif "disk is full" in text or errno_ == 28:
        why = "the disk is full"
    elif "readonly" in text or "read-only" in text.lower() or errno_ == 30:
        why = "the folder is read-only"
    else:
        why = text
    return StorageError(f"cannot {doing}: {why}", path=str(path))


def _storage(doing: str) -> Callable[[F], F]:
    """Turn sqlite3 errors of a Ledger method into one `StorageError` naming the file."""
    def wrap(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Ledger, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except sqlite3.Error as error:
                raise storage_error(error, self.path, doing) from None
        return wrapper  # type: ignore[return-value]
    return wrap


class Ledger:
    """`Ledger(path)` opens (or creates) a run's ledger for writing; `read_only=True` opens
    an existing one for reading only (`history`, `report`, ... on a read-only folder)."""

    FILE_NAME = "ledger.sqlite3"

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if self.path.is_file() and self.path.stat().st_size == 0:
            # SQLite would take it for a new database and the run would start afresh.
            raise StorageError("the ledger is empty (0 bytes): it is damaged, and was not "
                               "resumed or read; move it away to start a new run",
                               path=str(self.path))
        try:
            self._db = self._connect()
        except sqlite3.Error as error:
            raise storage_error(error, self.path, "open the ledger") from None
        self._journal: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            if not self.path.is_file():
                raise sqlite3.OperationalError("unable to open database file: no such file")
            db = None
            # mode=ro still needs the -shm file of a WAL database; on a read-only folder that
            # never had one, immutable=1 reads the file as it is (nobody can be writing it).
            for flags in ("mode=ro", "immutable=1"):
                db = sqlite3.connect(f"{self.path.resolve().as_uri()}?{flags}", uri=True,
                                     timeout=30, isolation_level=None, check_same_thread=False)
                try:
                    db.execute("SELECT COUNT(*) FROM steps").fetchone()
                    break
                except sqlite3.OperationalError as error:
                    db.close()
                    if flags == "immutable=1" or "no such table" in str(error):
                        raise
            assert db is not None
            db.row_factory = sqlite3.Row
            return db
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise storage_error(error, self.path.parent, "create the run folder") from None
        # One connection, used from the caller and from textprop's event-loop thread in turn.
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                             check_same_thread=False)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    @classmethod
    def in_run(cls, run_dir: str | Path, *, read_only: bool = False) -> Ledger:
        return cls(Path(run_dir) / cls.FILE_NAME, read_only=read_only)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise storage_error(error, self.path, "write to the ledger") from None
        try:
            yield self._db
        except BaseException as error:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # a failed COMMIT or a full disk may have rolled back already
            if isinstance(error, sqlite3.Error):
                raise storage_error(error, self.path, "write to the ledger") from None
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise storage_error(error, self.path, "write to the ledger") from None

    # --- writing -------------------------------------------------------------------------
    def set_meta(self, **items: Any) -> None:
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in items.items()])

    def record_step(self, record: StepRecord) -> None:
        """Write one whole step atomically; a step is either fully in the ledger or absent."""
        self.record_steps([record])

    def record_steps(self, records: Sequence[StepRecord]) -> None:
        """Write the steps of one search round in one transaction: all of them or none."""
        with self._transaction() as db:
            for record in records:
                self._write_step(db, record)

    def _write_step(self, db: sqlite3.Connection, record: StepRecord) -> None:
        record.finished_at = record.finished_at or time.time()
        db.execute(
            "INSERT OR REPLACE INTO steps (step, epoch, batch, batch_score, val_score, "
            "best_val_score, test_score, status, reason, values_json, optimizer_json, "
            "started_at, finished_at, search_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (record.step, record.epoch, json.dumps(record.batch), record.batch_score,
             record.val_score, record.best_val_score, record.test_score, record.status,
             record.reason, json.dumps(record.values), json.dumps(record.optimizer_state),
             record.started_at, record.finished_at, json.dumps(record.search_state)))
        for table in ("revisions", "losses", "evaluations", "calls", "candidates",
                      "step_outputs"):
            db.execute(f"DELETE FROM {table} WHERE step = ?", (record.step,))
        db.executemany("INSERT INTO revisions VALUES (?,?,?,?,?,?,?,?)", [
            (record.step, r.name, r.role_description, r.before, r.after, r.feedback,
             r.update_status, r.update_reason) for r in record.revisions])
        db.executemany("INSERT INTO losses VALUES (?,?,?,?,?,?)", [
            (record.step, r.example_id, r.prediction, r.target, r.score, r.explanation)
            for r in record.losses])
        db.executemany("INSERT INTO evaluations VALUES (?,?,?,?,?)", [
            (record.step, e.split, e.score, e.n, json.dumps(e.per_example))
            for e in record.evaluations])
        db.executemany("INSERT INTO candidates VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", [
            (c.id, record.step, json.dumps(c.parents), c.origin, json.dumps(c.changed),
             c.sample, json.dumps(c.values), json.dumps(c.feedback), json.dumps(c.minibatch),
             c.gate_before, c.gate_after, c.val_score,
             None if c.val_per_example is None else json.dumps(c.val_per_example),
             c.status, c.reason) for c in record.candidates])
        db.executemany("INSERT INTO step_outputs VALUES (?,?,?,?,?,?,?)", [
            (record.step, o.example_id, o.position, o.name, o.input, o.output, o.feedback)
            for o in record.step_outputs])
        self._insert_calls(db, record.step, record.calls)

    def record_calls(self, step: int, calls: Sequence[dict[str, Any]]) -> None:
        """Add calls made after `step` was recorded (e.g. the final test evaluation)."""
        with self._transaction() as db:
            self._insert_calls(db, step, calls)

    @staticmethod
    def _insert_calls(db: sqlite3.Connection, step: int,
                      calls: Sequence[dict[str, Any]]) -> None:
        db.executemany(
            "INSERT INTO calls (step, role, engine, input_tokens, output_tokens, cost_usd,"
            " latency_s, cached, ok) VALUES (?,?,?,?,?,?,?,?,?)",
            [(step, c["role"], c["engine"], c["input_tokens"], c["output_tokens"],
              c["cost_usd"], c["latency_s"], int(c["cached"]), int(c.get("ok", True)))
             for c in calls])

    @_storage("write to the ledger")
    def record_paid_call(self, engine: str, role: str, tokens: int, cost_usd: float) -> None:
        """File a call sent to a provider the moment it ends, not with its step: a run cut
        off mid-step has paid for the step's calls, and its resumed budget must count them.

        On a connection of its own that does not wait for the disk (WAL, synchronous=NORMAL):
        a commit survives a killed process, and costs microseconds, not an fsync per call.
        """
        if self._journal is None:
            self._journal = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                            check_same_thread=False)
            self._journal.execute("PRAGMA synchronous=NORMAL")
        self._journal.execute(
            "INSERT INTO paid_calls (engine, role, tokens, cost_usd) VALUES (?,?,?,?)",
            (engine, role, tokens, cost_usd))

    def update_step_status(self, step: int, status: str, reason: str,
                           values: dict[str, str] | None = None,
                           best_val_score: float | None = None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE steps SET status = ?, reason = ? WHERE step = ?",
                       (status, reason, step))
            if values is not None:
                db.execute("UPDATE steps SET values_json = ? WHERE step = ?",
                           (json.dumps(values), step))
            if best_val_score is not None:
                db.execute("UPDATE steps SET best_val_score = ? WHERE step = ?",
                           (best_val_score, step))

    def decide(self, step: int, decision: str, note: str = "") -> None:
        if decision not in ("approved", "rejected"):
            raise ValueError("decision must be 'approved' or 'rejected'")
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO approvals VALUES (?, ?, ?, ?)",
                       (step, decision, time.time(), note))

    # --- reading -------------------------------------------------------------------------
    @_storage("read the ledger")
    def meta(self) -> dict[str, Any]:
        return {r["key"]: json.loads(r["value"])
                for r in self._db.execute("SELECT key, value FROM meta")}

    @_storage("read the ledger")
    def steps(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM steps ORDER BY step").fetchall()
        return [self._step_dict(r) for r in rows]

    @_storage("read the ledger")
    def step(self, step: int) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM steps WHERE step = ?", (step,)).fetchone()
        return None if row is None else self._step_dict(row)

    @_storage("read the ledger")
    def last_step(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM steps ORDER BY step DESC LIMIT 1").fetchone()
        return None if row is None else self._step_dict(row)

    @_storage("read the ledger")
    def revisions(self, step: int | None = None) -> list[dict[str, Any]]:
        return self._rows("revisions", step)

    @_storage("read the ledger")
    def losses(self, step: int | None = None) -> list[dict[str, Any]]:
        return self._rows("losses", step)

    @_storage("read the ledger")
    def evaluations(self, step: int | None = None) -> list[dict[str, Any]]:
        rows = self._rows("evaluations", step)
        for r in rows:
            r["per_example"] = json.loads(r["per_example"])
        return rows

    @_storage("read the ledger")
    def step_outputs(self, step: int | None = None) -> list[dict[str, Any]]:
        """Per batch example, what each pipeline step received, returned and was told
        (empty for ledgers written before the table existed)."""
        where, args = ("WHERE step = ?", (step,)) if step is not None else ("", ())
        rows = self._db.execute(f"SELECT * FROM step_outputs {where} ORDER BY step, rowid",
                                args).fetchall()
        return [dict(r) for r in rows]

    @_storage("read the ledger")
    def calls(self, step: int | None = None) -> list[dict[str, Any]]:
        return self._rows("calls", step)

    @_storage("read the ledger")
    def candidates(self) -> list[CandidateRow]:
        rows = self._db.execute("SELECT * FROM candidates ORDER BY id").fetchall()
        return [CandidateRow(
            id=r["id"], step=r["step"], parents=json.loads(r["parents"]), origin=r["origin"],
            values=json.loads(r["values_json"]), status=r["status"], reason=r["reason"],
            changed=json.loads(r["changed"]), sample=r["sample"],
            feedback=json.loads(r["feedback"]), minibatch=json.loads(r["minibatch"]),
            gate_before=r["gate_before"], gate_after=r["gate_after"], val_score=r["val_score"],
            val_per_example=None if r["val_per_example"] is None
            else json.loads(r["val_per_example"])) for r in rows]

    @_storage("read the ledger")
    def approval(self, step: int) -> str | None:
        row = self._db.execute("SELECT decision FROM approvals WHERE step = ?",
                               (step,)).fetchone()
        return None if row is None else row["decision"]

    @_storage("read the ledger")
    def paid(self) -> tuple[int, int, float]:
        """(calls, tokens, dollars) sent to providers by every part of the run so far. A
        ledger from before the journal counts the uncached calls filed with its steps."""
        calls, tokens, cost = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(tokens), 0), COALESCE(SUM(cost_usd), 0) "
            "FROM paid_calls").fetchone()
        if calls == 0:
            calls, tokens, cost = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(input_tokens + output_tokens), 0), "
                "COALESCE(SUM(cost_usd), 0) FROM calls WHERE cached = 0").fetchone()
        return calls, tokens, cost

    @_storage("read the ledger")
    def usage_by_role(self) -> dict[str, dict[str, float]]:
        rows = self._db.execute(
            "SELECT role, COUNT(*) AS calls, SUM(cached) AS cache_hits, "
            "SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, "
            "SUM(cost_usd) AS cost_usd, SUM(latency_s) AS latency_s "
            "FROM calls GROUP BY role ORDER BY role").fetchall()
        return {r["role"]: {k: r[k] for k in r.keys() if k != "role"} for r in rows}

    def _rows(self, table: str, step: int | None) -> list[dict[str, Any]]:
        order = "step, rowid"
        if step is None:
            rows = self._db.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
        else:
            rows = self._db.execute(f"SELECT * FROM {table} WHERE step = ? ORDER BY {order}",
                                    (step,)).fetchall()
        return [dict(r) for r in rows]

    @staticmethod
    def _step_dict(row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        d["batch"] = json.loads(d["batch"])
        d["values"] = json.loads(d.pop("values_json"))
        d["optimizer_state"] = json.loads(d.pop("optimizer_json"))
        d["search_state"] = json.loads(d.pop("search_json"))
        return d


def summarize_scores(steps: Sequence[dict[str, Any]]) -> list[tuple[int, float | None,
                                                                     float | None]]:
    """(step, batch score, validation score) per step, for curves."""
    return [(s["step"], s["batch_score"], s["val_score"]) for s in steps]
