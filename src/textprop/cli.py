"""`textprop` command line: optimize, refine, eval, history, diff, export, report, approve,
runs, compare, demo, serve."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

from textprop.errors import BudgetExceeded, TextpropError
from textprop.train.events import RunCallback


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.handler(args) or 0
    except TextpropError as error:
        print(f"textprop: error: {error}", file=sys.stderr)
        return 1
    except FileExistsError as error:
        print(f"textprop: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("textprop: interrupted; resume with --resume", file=sys.stderr)
        return 130


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A warning is one line for the user, not Python's file:line and source line."""
    print(f"textprop: warning: {message}", file=sys.stderr, flush=True)


RUN_HELP = "run folder (as printed by optimize)"


def _parser() -> argparse.ArgumentParser:
    from textprop import __version__

    parser = argparse.ArgumentParser(
        prog="textprop", description="Optimize prompts by textual backpropagation.")
    parser.add_argument("--version", action="version", version=f"textprop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler: Any, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        p.add_argument("--quiet", action="store_true", help="print only the result")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        return p

    p = command("optimize", _optimize, "optimize the prompts of a TOML config")
    p.add_argument("config", type=Path, help="the run config (TOML)")
    p.add_argument("--estimate", action="store_true",
                   help="print the most the run can spend (calls, tokens, dollars per role) "
                        "and exit without calling any model")
    _run_options(p)

    p = command("demo", _demo, "optimize a built-in task on the embedded local model")
    p.add_argument("--engine", default=None,
                   help="engine spec for every role (default: the config's batched "
                        "embedded engines)")
    p.add_argument("--deterministic", action="store_true",
                   help="run the one-at-a-time embedded engines (shipped weights), so two "
                        "runs give the identical trajectory; about twice as slow")
    _run_options(p)

    p = command("refine", _refine, "improve one text (an answer, a solution, code) against "
                                   "a loss: an LLM judge, a metric or its tests")
    p.add_argument("config", type=Path)
    p.add_argument("--run-dir", type=Path, help="run folder (default: run.dir/run.name)")
    p.add_argument("--iterations", type=int, help="override [refine] iterations")
    p.add_argument("--no-cache", action="store_true", help="do not use the LLM call cache")

    p = command("eval", _eval, "score a config's prompt (or a run's final prompt) on a split")
    p.add_argument("config", type=Path, help="the run config (TOML)")
    p.add_argument("--run", type=Path, help="use this run's final values")
    p.add_argument("--split", choices=["train", "val", "test"], default="test",
                   help="the split to score (default: test)")
    p.add_argument("--no-cache", action="store_true", help="do not use the LLM call cache")

    p = command("history", _history, "list a run's steps (or a search's candidates)")
    p.add_argument("run", type=Path, help=RUN_HELP)
    p.add_argument("--candidates", action="store_true",
                   help="list the candidates of a pareto search instead of the steps")
    p.add_argument("--variable", metavar="NAME",
                   help="one parameter's history: its value, proposals and feedback per step")
    p = command("diff", _diff, "show how the prompts changed between two steps")
    p.add_argument("run", type=Path, help=RUN_HELP)
    p.add_argument("a", type=int, help="step number (or candidate id with --candidates)")
    p.add_argument("b", type=int, help="step number (or candidate id with --candidates)")
    p.add_argument("--candidates", action="store_true",
                   help="A and B are candidate ids of a pareto search")
    p = command("export", _export, "write a run's final prompts as text and JSON")
    p.add_argument("run", type=Path, help=RUN_HELP)
    p.add_argument("--out", type=Path, help="folder (default: RUN/export)")
    p = command("report", _report, "write a run's HTML report")
    p.add_argument("run", type=Path, help=RUN_HELP)
    p.add_argument("--out", type=Path, help="file (default: RUN/report.html)")
    p = command("runs", _runs, "list the runs in a folder: status, steps, scores, cost, date")
    p.add_argument("dir", type=Path, nargs="?", default=Path("runs"),
                   help="a folder of run folders (default: ./runs)")
    p = command("compare", _compare, "two runs side by side: scores, usage, final prompts' diff")
    p.add_argument("run_a", type=Path, help=RUN_HELP)
    p.add_argument("run_b", type=Path, help=RUN_HELP)
    for name, decision in (("approve", "approved"), ("reject", "rejected")):
        p = command(name, _decide, f"{name} a step that awaits review")
        p.add_argument("run", type=Path, help=RUN_HELP)
        p.add_argument("step", type=int, help="the step number that awaits review")
        p.add_argument("--note", default="", help="a note kept with the decision")
        p.set_defaults(decision=decision)
    p = command("serve", _serve, "serve the embedded model as an OpenAI-compatible endpoint")
    p.add_argument("--model", default="local",
                   help="local (0.5B, the default), local:1.5b, or a GGUF file path")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--n-parallel", type=int, default=None,
                   help="sequences decoded together (default: the engine's)")
    p.add_argument("--cpu-lock", metavar="FILE", default=None,
                   help="take turns on the cores with other servers given the same file "
                        "(one llama.cpp decode at a time, e.g. a task and a writer model)")
    return parser


def _serve(args: argparse.Namespace) -> int:
    from textprop.serve import main as serve

    return serve(args.model, port=args.port, host=args.host, n_parallel=args.n_parallel,
                 cpu_lock=args.cpu_lock)


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", type=Path, help="run folder (default: run.dir/run.name)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--no-cache", action="store_true", help="do not use the LLM call cache")
    p.add_argument("--cache", type=Path, help="cache file (default: the user cache)")
    p.add_argument("--replay", action="store_true",
                   help="serve every call from the cache; fail on a call never recorded")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (TOML syntax), e.g. trainer.epochs=2")


# --- optimize / demo -----------------------------------------------------------------------
def _optimize(args: argparse.Namespace, config_path: Path | None = None) -> int:
    from textprop.train.config import load_config

    config = load_config(config_path or args.config, _overrides(args))
    if getattr(args, "estimate", False):
        return _estimate(args, config)
    return _run(args, config, config_path or args.config)


def _estimate(args: argparse.Namespace, config: Any) -> int:
    from textprop.train.estimate import estimate

    bound = estimate(config)
    print(json.dumps(bound.to_dict(), indent=2) if args.json else bound.format())
    return 0


# `textprop demo --deterministic`: the engines whose answers do not depend on batch-mates.
DETERMINISTIC_DEMO = {"engines.default": "local", "engines.feedback": "local:1.5b",
                      "engines.optimizer": "local:1.5b", "engines.concurrency": 1}


def _demo(args: argparse.Namespace) -> int:
    from textprop.train.config import load_config

    path = resources.files("textprop").joinpath("demo.toml")
    with resources.as_file(path) as demo_path:
        overrides = {**(DETERMINISTIC_DEMO if args.deterministic else {}), **_overrides(args)}
        if args.engine:
            for role in ("default", "forward", "feedback", "optimizer"):
                overrides[f"engines.{role}"] = args.engine
        config = load_config(demo_path, overrides)
        return _run(args, config, demo_path)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    import tomllib

    from textprop.errors import ConfigError

    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set takes SECTION.KEY=VALUE, got {item!r}")
        try:
            overrides[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key] = raw
    if args.no_cache:
        overrides["cache.enabled"] = False
    if args.cache:
        overrides["cache.path"] = str(args.cache.resolve())
    if args.replay:
        overrides["cache.replay"] = True
    return overrides


def _run(args: argparse.Namespace, config: Any, config_path: Path) -> int:
    import warnings

    from textprop.train.build import build_trainer
    from textprop.train.estimate import estimate
    from textprop.train.run_folder import claim_run_dir

    run_dir = args.run_dir or Path(config.run.dir) / config.run.name
    # Everything is built and checked (data, metric, engines, templates, prices) before the
    # run folder exists: a config that cannot run leaves nothing behind.
    trainer, engines = build_trainer(config, run_dir)
    try:
        bound = estimate(config)
    except Exception as error:  # the preview must never stop a run
        print(f"textprop: warning: no cost estimate: {error}", file=sys.stderr)
        bound = None
    progress = _Progress(args, bound, config.budget)
    trainer.events.add(progress)
    show = warnings.showwarning

    def above_status(*warning: Any, **kw: Any) -> None:  # a warning prints above the line
        with progress.above():
            show(*warning, **kw)
    warnings.showwarning = above_status
    try:
        with claim_run_dir(run_dir, resume=args.resume,
                           explicit=args.run_dir is not None) as run_dir:
            trainer.use_run_dir(run_dir)
            for tracker in _trackers(config, run_dir):
                trainer.events.add(tracker)
            try:
                return _start(args, config, config_path, trainer, engines, run_dir, bound)
            finally:
                if trainer._ledger is not None:
                    trainer.ledger.close()
                _close_caches(engines)
    finally:
        warnings.showwarning = show
        progress.close()  # an error or ^C prints below the status line, not over it


def _close_caches(engines: Any) -> None:
    """Close the cache files, so nothing of this run holds them once it has ended."""
    from textprop.engines.cache import Cache
    from textprop.engines.stack import find_layer

    for meter in engines.meters:
        cache = find_layer(meter, Cache)
        if cache is not None:
            cache.close()


def _start(args: argparse.Namespace, config: Any, config_path: Path, trainer: Any,
           engines: Any, run_dir: Path, bound: Any) -> int:
    from textprop.engines.registry import public_spec
    from textprop.ledger import storage_error

    try:
        if not (run_dir / "config.toml").exists():
            shutil.copyfile(config_path, run_dir / "config.toml")
            if args.set:
                (run_dir / "overrides.json").write_text(json.dumps(_overrides(args), indent=2))
    except OSError as error:
        raise storage_error(error, run_dir / "config.toml", "copy the config") from None
    say = _printer(args)
    say(f"run folder: {run_dir}")
    say(f"LLM call cache: {engines.cache_path or 'off'}")
    if not trainer.ledger.meta():
        trainer.ledger.set_meta(
            name=config.run.name, started_at=time.time(), status="running",
            task=_task_label(config.task),
            engines={role: public_spec(config.engine_spec(role))
                     for role in ("forward", "feedback", "optimizer")},
            config_path=str(Path(config_path).resolve()), overrides=args.set,
            estimate=bound.to_dict() if bound else None)
    if engines.unpriced:  # the report shows their cost as unknown, not $0
        trainer.ledger.set_meta(unpriced=engines.unpriced)
    try:
        result = trainer.run(resume=args.resume)
    except BudgetExceeded as error:  # not a failure of the run: accepted steps are kept
        raise BudgetExceeded(
            f"{error}. The run keeps every finished step; to go on, raise the limit in "
            f"[budget] and run: {_resume_command(trainer.ledger, run_dir)}",
            usage=error.usage) from None
    from textprop.report import write_report

    if result.already_finished:
        print(json.dumps({"run": str(run_dir), "status": result.status,
                          "message": result.message}) if args.json else result.message)
        return 0
    report = write_report(run_dir)
    summary = {
        "run": str(run_dir), "status": result.status, "steps": result.steps,
        "baseline_val": result.baseline_val, "best_val": result.best_val,
        "baseline_test": result.baseline_test, "final_test": result.final_test,
        "report": str(report), "values": result.values, "message": result.message,
        "usage": {m.inner.name if hasattr(m, "inner") else "engine": _usage(m)
                  for m in engines.meters},
        "estimate": bound.to_dict() if bound else None, "spent": _spent(engines),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    if result.message:
        print(result.message)
    if result.baseline_test is not None and result.final_test is not None:
        print(f"held-out test accuracy: {result.baseline_test:.3f} (baseline) -> "
              f"{result.final_test:.3f} (optimized)")
    print(f"validation: {result.baseline_val:.3f} -> {result.best_val:.3f}")
    spent, most = summary["spent"], summary["estimate"]
    line = (f"spent: {spent['calls']['total']} calls, {spent['tokens']['total']} tokens, "
            f"${spent['cost_usd']['total']:.4f}")
    if most:
        tokens, cost = most["tokens"]["total"], most["cost_usd"]["total"]
        line += (f" (estimated at most: {most['calls']['total']} calls, "
                 f"{'unbounded' if tokens is None else tokens} tokens, "
                 f"{'$?' if cost is None else f'${cost:.4f}'})")
    print(line)
    print(f"report: {report}")
    return 0


def _spent(engines: Any) -> dict[str, Any]:
    """What the run's meters counted, in the estimate's shape."""
    from textprop.engines.metering import UsageSummary

    usage = UsageSummary.combine(m.usage() for m in engines.meters)
    roles = dict(usage.by_role)
    return {"calls": {"total": usage.total.calls, **{r: u.calls for r, u in roles.items()}},
            "tokens": {"total": usage.total.total_tokens,
                       **{r: u.total_tokens for r, u in roles.items()}},
            "cost_usd": {"total": usage.total.cost_usd,
                         **{r: u.cost_usd for r, u in roles.items()}}}


def _trackers(config: Any, run_dir: Path) -> list[RunCallback]:
    from textprop.tracking import build_trackers

    return build_trackers(config, run_dir)


def _task_label(task: Any) -> str:
    """What the run's task is, for history and the report."""
    if task.builtin:
        return task.builtin
    if task.bbh:
        return f"BBH {Path(task.bbh).stem}"
    if task.gsm8k:
        return "GSM8K"
    files = [Path(p).name for p in (task.train, task.val, task.test) if p]
    return f"data files {', '.join(files)}"


def _usage(meter: Any) -> dict[str, Any]:
    usage = meter.usage()
    return usage.to_dict() if hasattr(usage, "to_dict") else str(usage)


def _printer(args: argparse.Namespace):
    def say(message: str) -> None:
        if not (args.quiet or args.json):
            print(message, file=sys.stderr, flush=True)
    return say


class _Progress(RunCallback):
    """The CLI's progress display, fed by the run's events: a line per step and per
    candidate that joins a search's pool on stderr and, on a terminal, one status line for
    the whole run under them: step k of n, calls, tokens and dollars so far against the
    budget (or the estimate's bound), time elapsed and an estimate of the time left."""

    REFRESH_S = 0.1

    def __init__(self, args: argparse.Namespace, estimate: Any = None,
                 budget: Any = None) -> None:
        import threading

        self.quiet = args.quiet or args.json
        self.bar = self.live = not self.quiet and sys.stderr.isatty()
        self.estimate, self.budget = estimate, budget
        self._lock = threading.RLock()
        self.started = time.monotonic()
        self.calls = self.tokens = 0
        self.cost = 0.0
        self.step, self.planned = 0, None
        self.metric_calls: tuple[float, float | None] = (0, None)
        self.evaluation: tuple[str, int, int] | None = None
        self._drawn, self._last = False, 0.0

    # --- the lines above the status ------------------------------------------------------
    def on_message(self, text: str) -> None:
        if self.quiet:
            return
        with self.above():
            print(text, file=sys.stderr, flush=True)

    def above(self) -> Any:
        """A context in which output goes above the status line (redrawn after it)."""
        import contextlib

        @contextlib.contextmanager
        def context() -> Any:
            with self._lock:
                self._clear()
                try:
                    yield
                finally:
                    self._draw(force=True)
        return context()

    def on_candidate_accepted(self, candidate: Any) -> None:
        self.on_message(f"  candidate {candidate.id} ({candidate.origin} of "
                        f"{', '.join(map(str, candidate.parents))}) joined the pool: "
                        f"validation {candidate.val_score:.3f}")

    def on_budget(self, used: dict[str, float], limits: dict[str, float | None]) -> None:
        self.metric_calls = (used.get("metric_calls", 0), limits.get("metric_calls"))
        if limits.get("metric_calls") and not self.live:
            self.on_message(f"  metric calls: {used['metric_calls']:.0f} of "
                            f"{limits['metric_calls']:.0f}")
        self._draw(force=True)

    # --- the status line -----------------------------------------------------------------
    def on_call(self, call: dict[str, Any], step: int) -> None:
        with self._lock:
            self.calls += 1
            if not call.get("cached"):
                self.tokens += (call.get("input_tokens") or 0) + (call.get("output_tokens") or 0)
            self.cost += call.get("cost_usd") or 0.0
        self._draw()

    def on_step(self, record: Any, planned: int | None) -> None:
        with self._lock:
            self.step, self.planned = max(self.step, record.step), planned
        self._draw(force=True)

    def on_evaluation_progress(self, label: str, done: int, total: int) -> None:
        with self._lock:
            self.evaluation = None if done >= total else (label, done, total)
        self._draw(force=done >= total)

    def on_run_finished(self, result: Any) -> None:
        if not self.live:
            return
        with self._lock:
            self.evaluation = None
            self._clear()
            print(self.status(), file=sys.stderr, flush=True)  # the last state stays
            self._drawn = False
            self.live = False

    def close(self) -> None:
        """End the status line where it stands (after an error, the run's last state)."""
        with self._lock:
            if self._drawn:
                print(file=sys.stderr, flush=True)
                self._drawn = False
            self.live = False

    def _fraction(self) -> float | None:
        if self.planned:
            return min(self.step / self.planned, 1.0)
        used, limit = self.metric_calls
        if limit:
            return min(used / limit, 1.0)
        if self.estimate is not None and self.estimate.calls:
            return min(self.calls / self.estimate.calls, 1.0)
        return None

    def status(self) -> str:
        elapsed = time.monotonic() - self.started
        b, e = self.budget, self.estimate
        parts = [f"step {self.step}/{self.planned}" if self.planned else f"step {self.step}"]
        most_calls = (b.max_calls if b is not None and b.max_calls else
                      e.calls if e is not None else None)
        parts.append(f"{self.calls}" + (f"/{most_calls}" if most_calls else "") + " calls")
        most_tokens = (b.max_tokens if b is not None and b.max_tokens else
                       e.tokens if e is not None else None)
        parts.append(f"{_short(self.tokens)}" + (f"/{_short(most_tokens)}" if most_tokens
                                                 else "") + " tokens")
        most_cost = (b.max_cost_usd if b is not None and b.max_cost_usd else
                     e.cost_usd.get("total") if e is not None else None)
        parts.append(f"${self.cost:.4f}" + (f" of ${most_cost:.4f}" if most_cost else ""))
        used, limit = self.metric_calls
        if limit:
            parts.append(f"metric calls {used:.0f}/{limit:.0f}")
        parts.append(f"{_clock(elapsed)} elapsed")
        fraction = self._fraction()
        if fraction and fraction < 1:
            parts.append(f"~{_clock(elapsed * (1 - fraction) / fraction)} left")
        if self.evaluation:
            label, done, total = self.evaluation
            parts.append(f"{label} {done}/{total}")
        return " | ".join(parts)

    def _clear(self) -> None:
        if self._drawn:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
            self._drawn = False

    def _draw(self, force: bool = False) -> None:
        if not self.live:
            return
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last < self.REFRESH_S:
                return
            self._last = now
            width = shutil.get_terminal_size((100, 24)).columns
            print("\r\033[K" + self.status()[:max(width - 1, 20)], end="", file=sys.stderr,
                  flush=True)
            self._drawn = True


def _short(n: float) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else f"{n:.0f}"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


# --- runs / compare ------------------------------------------------------------------------
def _run_summary(run: Path) -> dict[str, Any]:
    from textprop.ledger import Ledger

    ledger = Ledger.in_run(run)
    try:
        meta, steps = ledger.meta(), ledger.steps()
        usage = ledger.usage_by_role()
        final = meta.get("final") or {}
        vals = [s["best_val_score"] for s in steps if s["best_val_score"] is not None]
        return {
            "run": str(run), "name": meta.get("name", run.name),
            "status": ("awaiting_approval" if meta.get("status") == "running" and steps
                       and steps[-1]["status"] == "pending" else meta.get("status", "unknown")),
            "steps": max((s["step"] for s in steps), default=0),
            "baseline_val": steps[0]["val_score"] if steps else None,
            "best_val": final.get("best_val_score", vals[-1] if vals else None),
            "baseline_test": steps[0]["test_score"] if steps else None,
            "test": final.get("test_score"),
            "calls": sum(int(u["calls"] or 0) for u in usage.values()),
            "tokens": sum(int((u["input_tokens"] or 0) + (u["output_tokens"] or 0))
                          for u in usage.values()),
            "cost_usd": sum(float(u["cost_usd"] or 0) for u in usage.values()),
            "started_at": meta.get("started_at"), "usage": usage,
            "values": final.get("values") or next(
                (s["values"] for s in reversed(steps) if s["status"] != "pending"), {}),
        }
    finally:
        ledger.close()


def _date(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _runs(args: argparse.Namespace) -> int:
    from textprop.errors import ConfigError

    if not args.dir.is_dir():
        raise ConfigError("no such folder", source=str(args.dir))
    folders = sorted(p.parent for p in args.dir.glob("*/ledger.sqlite3"))
    if (args.dir / "ledger.sqlite3").exists():
        folders.insert(0, args.dir)
    rows = [_run_summary(f) for f in folders]
    rows.sort(key=lambda r: r["started_at"] or 0)
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k not in ("usage", "values")}
                          for r in rows], indent=2))
        return 0
    if not rows:
        print(f"no runs in {args.dir}")
        return 0
    width = max(len(Path(r["run"]).name) for r in rows)
    print(f"{'run':<{width}}  {'status':<17}  {'steps':>5}  {'best val':>8}  {'test':>6}  "
          f"{'cost $':>8}  date")
    for r in rows:
        print(f"{Path(r['run']).name:<{width}}  {r['status']:<17}  {r['steps']:>5}  "
              f"{_fmt(r['best_val']):>8}  {_fmt(r['test']):>6}  {r['cost_usd']:>8.4f}  "
              f"{_date(r['started_at'])}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    import difflib

    for run in (args.run_a, args.run_b):
        _ledger(run).close()
    a, b = _run_summary(args.run_a), _run_summary(args.run_b)
    keys = ["status", "steps", "baseline_val", "best_val", "baseline_test", "test",
            "calls", "tokens", "cost_usd"]
    diffs = {}
    for name in sorted(set(a["values"]) | set(b["values"])):
        diffs[name] = "".join(difflib.unified_diff(
            a["values"].get(name, "").splitlines(keepends=True),
            b["values"].get(name, "").splitlines(keepends=True),
            fromfile=f"{name}@{args.run_a.name}", tofile=f"{name}@{args.run_b.name}"))
    if args.json:
        print(json.dumps({"a": {k: a[k] for k in ["run", *keys]},
                          "b": {k: b[k] for k in ["run", *keys]}, "diff": diffs}, indent=2))
        return 0
    na, nb = args.run_a.name, args.run_b.name
    w = max(len(na), len(nb), 10)
    print(f"{'':<14}  {na:>{w}}  {nb:>{w}}")

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if value and value < 0.01 else f"{value:.3f}"
        return "-" if value is None else str(value)
    for k in keys:
        print(f"{k:<14}  {cell(a[k]):>{w}}  {cell(b[k]):>{w}}")
    print()
    for name, text in diffs.items():
        print(text or f"{name}: the same final value in both runs")
    return 0


# --- refine --------------------------------------------------------------------------------
def _refine(args: argparse.Namespace) -> int:
    from textprop.refinement import arefine, config_loss, config_text, load_refine_config
    from textprop.train.build import build_engines

    config = load_refine_config(args.config)
    if args.no_cache:
        config.cache.enabled = False
    if args.iterations:
        config.refine.iterations = args.iterations
    text = config_text(config)
    engines = build_engines(config)  # type: ignore[arg-type]
    loss = config_loss(config, engines.feedback)  # a bad loss fails before the run folder
    run_dir = args.run_dir or Path(config.run.dir) / config.run.name
    if (run_dir / "ledger.sqlite3").exists():
        run_dir = run_dir.with_name(f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.config, run_dir / "config.toml")
    say = _printer(args)
    say(f"run folder: {run_dir}")
    from textprop._sync import run_sync

    result = run_sync(arefine(
        text, loss, engine=engines.forward, feedback_engine=engines.feedback,
        optimizer_engine=engines.optimizer, iterations=config.refine.iterations,
        role_description=config.refine.role_description,
        constraints=config.refine.constraints,
        gradient_memory=config.refine.gradient_memory, run_dir=run_dir, meters=engines.meters,
        progress=say))
    from textprop.report import write_report

    report = write_report(run_dir)
    (run_dir / "best.txt").write_text(result.best, encoding="utf-8")
    summary = {"run": str(run_dir), "initial_score": result.initial_score,
               "best_score": result.best_score, "iterations": result.iterations,
               "best": result.best, "report": str(report)}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{loss.name}: {result.initial_score:.3f} -> {result.best_score:.3f} after "
          f"{result.iterations} rewrite(s)")
    print(f"best version: {run_dir / 'best.txt'}")
    print(f"report: {report}")
    return 0


# --- eval ----------------------------------------------------------------------------------
def _eval(args: argparse.Namespace) -> int:
    from textprop._sync import run_sync
    from textprop.train.build import build_trainer
    from textprop.train.config import load_config

    overrides = {"cache.enabled": False} if args.no_cache else {}
    config = load_config(args.config, overrides)
    values = _final_values(_ledger(args.run), args.run, "evaluate") if args.run else None
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        trainer, _ = build_trainer(config, Path(scratch))
        if values is not None:
            trainer._apply(values)
        dataset = getattr(trainer.splits, args.split)
        row = run_sync(trainer.evaluate(dataset, args.split))
    if args.json:
        print(json.dumps({"split": args.split, "score": row.score, "n": row.n}))
    else:
        print(f"{args.split}: {row.score:.3f} on {row.n} examples")
    return 0


# --- reading a run -------------------------------------------------------------------------
def _ledger(run: Path, *, writable: bool = False):
    from textprop.errors import ConfigError
    from textprop.ledger import Ledger

    if not (run / "ledger.sqlite3").exists():
        raise ConfigError("not a run folder (no ledger.sqlite3)", source=str(run))
    return Ledger.in_run(run, read_only=not writable)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _history(args: argparse.Namespace) -> int:
    if args.candidates:
        return _candidates(args)
    if args.variable:
        return _variable_history(args)
    steps = _ledger(args.run).steps()
    if args.json:  # epochs count from 1, as in the table and the report
        print(json.dumps([{**s, "epoch": s["epoch"] + 1} for s in steps], indent=2))
        return 0
    print(f"{'step':>4}  {'epoch':>5}  {'status':<9}  {'batch':>6}  {'val':>6}  "
          f"{'test':>6}  reason")
    for s in steps:
        print(f"{s['step']:>4}  {s['epoch'] + 1:>5}  {s['status']:<9}  "
              f"{_fmt(s['batch_score']):>6}  {_fmt(s['val_score']):>6}  "
              f"{_fmt(s['test_score']):>6}  {s['reason']}")
    return 0


def _variable_history(args: argparse.Namespace) -> int:
    from textprop.train.reader import open_run

    with open_run(args.run) as run:
        rows = run.history(args.variable)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    previous = None
    for r in rows:
        print(f"step {r['step']}  {r['status']}  ({r['reason']})")
        if r["proposal"] is not None and r["proposal"] != r["value"]:
            print(_indent(f"proposed ({r['update_status']}, not applied):", r["proposal"]))
        if r["value"] != previous:
            print(_indent("value:", r["value"]))
        if r["feedback"].strip():
            print(_indent("feedback:", r["feedback"].strip()))
        previous = r["value"]
    return 0


def _indent(label: str, text: str) -> str:
    return "  " + label + "\n" + "\n".join("    " + line for line in text.splitlines())


def _candidates(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    rows = _ledger(args.run).candidates()
    if args.json:
        print(json.dumps([asdict(c) for c in rows], indent=2))
        return 0
    print(f"{'id':>4}  {'step':>4}  {'parents':<7}  {'origin':<8}  {'status':<9}  "
          f"{'gate':>11}  {'val':>6}  changed")
    for c in rows:
        gate = ("-" if c.gate_after is None
                else f"{_fmt(c.gate_before)}>{_fmt(c.gate_after)}")
        print(f"{c.id:>4}  {c.step:>4}  {','.join(map(str, c.parents)) or '-':<7}  "
              f"{c.origin:<8}  {c.status:<9}  {gate:>11}  {_fmt(c.val_score):>6}  "
              f"{', '.join(c.changed) or '-'}")
    return 0


def _diff(args: argparse.Namespace) -> int:
    import difflib

    from textprop.errors import ConfigError

    ledger = _ledger(args.run)
    if args.candidates:
        by_id = {c.id: c.values for c in ledger.candidates()}
        a, b = by_id.get(args.a), by_id.get(args.b)
        what = "candidate"
    else:
        a, b = (None if s is None else s["values"] for s in (ledger.step(args.a),
                                                             ledger.step(args.b)))
        what = "step"
    if a is None or b is None:
        raise ConfigError(f"no {what} {args.a if a is None else args.b} in this run",
                          source=str(args.run))
    out = {}
    for name in a:  # every line ends in "\n", the last one too, so none run together
        out[name] = "".join(difflib.unified_diff(
            _lines(a[name]), _lines(b.get(name, "")),
            fromfile=f"{name}@{args.a}", tofile=f"{name}@{args.b}"))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name, text in out.items():
            print(text or f"{name}: no change between {what}s {args.a} and {args.b}")
    return 0


def _lines(text: str) -> list[str]:
    return [line + "\n" for line in text.splitlines()]


def _final_values(ledger: Any, run: Path, what: str = "export") -> dict[str, str]:
    from textprop.errors import ConfigError

    final = ledger.meta().get("final", {}).get("values")
    last = ledger.last_step()
    if not final and last is None:
        raise ConfigError(f"the run has no steps yet, so nothing to {what}", source=str(run))
    return final or last["values"]


def _export(args: argparse.Namespace) -> int:
    from textprop.errors import ConfigError
    from textprop.ledger import storage_error
    from textprop.train.config import is_plain_name

    ledger = _ledger(args.run)
    values = _final_values(ledger, args.run)
    for name in values:  # names come from the ledger: never let one pick another folder
        if not is_plain_name(name):
            raise ConfigError(f"the ledger names a value {name!r}, which is not a file name; "
                              "nothing was exported", source=str(args.run))
    out = args.out or args.run / "export"
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, value in values.items():
            (out / f"{name}.txt").write_text(value + "\n", encoding="utf-8")
        (out / "prompts.json").write_text(json.dumps(values, indent=2) + "\n",
                                          encoding="utf-8")
    except OSError as error:
        raise storage_error(error, out, "write the export") from None
    print(json.dumps({"folder": str(out), "files": sorted(p.name for p in out.iterdir())})
          if args.json else f"exported {len(values)} prompt(s) to {out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from textprop.ledger import storage_error
    from textprop.report import write_report

    _ledger(args.run).close()
    try:
        path = write_report(args.run, args.out)
    except OSError as error:
        target = args.out or args.run / "report.html"
        raise storage_error(error, target, "write the report") from None
    print(json.dumps({"report": str(path)}) if args.json else f"report: {path}")
    return 0


def _resume_command(ledger: Any, run: Path) -> str:
    """The command that resumes the run: its own config file (relative data paths resolve
    against that file's folder, not the run folder's copy) and its --set overrides."""
    import shlex

    meta = ledger.meta()
    config = meta.get("config_path")
    if not config or not Path(config).is_file():
        config = str(run / "config.toml")
    sets = [part for item in meta.get("overrides") or [] for part in ("--set", item)]
    return shlex.join(["textprop", "optimize", config, *sets, "--run-dir", str(run),
                       "--resume"])


def _decide(args: argparse.Namespace) -> int:
    from textprop.errors import ConfigError

    ledger = _ledger(args.run, writable=True)
    step = ledger.step(args.step)
    if step is None or step["status"] != "pending":
        raise ConfigError(f"step {args.step} is not awaiting review", source=str(args.run))
    ledger.decide(args.step, args.decision, args.note)
    print(f"step {args.step} {args.decision}; continue with: {_resume_command(ledger, args.run)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
