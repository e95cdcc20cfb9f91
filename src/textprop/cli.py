"""`textprop` command line: optimize, eval, history, diff, export, report, approve, demo."""

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

from textprop.errors import TextpropError
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
    _run_options(p)

    p = command("demo", _demo, "optimize a built-in task on the embedded local model")
    p.add_argument("--engine", default=None,
                   help="engine spec for every role (default: the config's, 'local')")
    _run_options(p)

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
    for name, decision in (("approve", "approved"), ("reject", "rejected")):
        p = command(name, _decide, f"{name} a step that awaits review")
        p.add_argument("run", type=Path, help=RUN_HELP)
        p.add_argument("step", type=int, help="the step number that awaits review")
        p.add_argument("--note", default="", help="a note kept with the decision")
        p.set_defaults(decision=decision)
    return parser


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
    return _run(args, config, config_path or args.config)


def _demo(args: argparse.Namespace) -> int:
    from textprop.train.config import load_config

    path = resources.files("textprop").joinpath("demo.toml")
    with resources.as_file(path) as demo_path:
        overrides = _overrides(args)
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
    from textprop.train.build import build_trainer
    from textprop.train.run_folder import claim_run_dir

    run_dir = args.run_dir or Path(config.run.dir) / config.run.name
    # Everything is built and checked (data, metric, engines, templates, prices) before the
    # run folder exists: a config that cannot run leaves nothing behind.
    trainer, engines = build_trainer(config, run_dir, callbacks=[_Progress(args)])
    with claim_run_dir(run_dir, resume=args.resume,
                       explicit=args.run_dir is not None) as run_dir:
        trainer.use_run_dir(run_dir)
        try:
            return _start(args, config, config_path, trainer, engines, run_dir)
        finally:
            if trainer._ledger is not None:
                trainer.ledger.close()
            _close_caches(engines)


def _close_caches(engines: Any) -> None:
    """Close the cache files, so nothing of this run holds them once it has ended."""
    from textprop.engines.cache import Cache
    from textprop.engines.stack import find_layer

    for meter in engines.meters:
        cache = find_layer(meter, Cache)
        if cache is not None:
            cache.close()


def _start(args: argparse.Namespace, config: Any, config_path: Path, trainer: Any,
           engines: Any, run_dir: Path) -> int:
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
            config_path=str(Path(config_path).resolve()), overrides=args.set)
    if engines.unpriced:  # the report shows their cost as unknown, not $0
        trainer.ledger.set_meta(unpriced=engines.unpriced)
    result = trainer.run(resume=args.resume)
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
    print(f"report: {report}")
    return 0


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
    candidate that joins a search's pool on stderr, and a bar for evaluations on a terminal."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.quiet = args.quiet or args.json
        self.bar = not self.quiet and sys.stderr.isatty()

    def on_message(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def on_candidate_accepted(self, candidate: Any) -> None:
        self.on_message(f"  candidate {candidate.id} ({candidate.origin} of "
                        f"{', '.join(map(str, candidate.parents))}) joined the pool: "
                        f"validation {candidate.val_score:.3f}")

    def on_budget(self, used: dict[str, float], limits: dict[str, float | None]) -> None:
        if limits.get("metric_calls"):
            self.on_message(f"  metric calls: {used['metric_calls']:.0f} of "
                            f"{limits['metric_calls']:.0f}")

    def on_evaluation_progress(self, label: str, done: int, total: int) -> None:
        if not self.bar:
            return
        filled = round(24 * done / max(total, 1))
        end = "\n" if done == total else ""
        print(f"\r  {label:<5} [{'#' * filled}{'.' * (24 - filled)}] {done}/{total}", end=end,
              file=sys.stderr, flush=True)


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
