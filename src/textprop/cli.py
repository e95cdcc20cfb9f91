"""`textprop` command line: optimize, eval, history, diff, export, report, approve, demo,
serve."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from textprop.errors import TextpropError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textprop", description="Optimize prompts by textual backpropagation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler: Any, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        p.add_argument("--quiet", action="store_true", help="print only the result")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        return p

    p = command("optimize", _optimize, "optimize the prompts of a TOML config")
    p.add_argument("config", type=Path)
    _run_options(p)

    p = command("demo", _demo, "optimize a built-in task on the embedded local model")
    p.add_argument("--engine", default=None,
                   help="engine spec for every role (default: the config's, 'local')")
    _run_options(p)

    p = command("eval", _eval, "score a config's prompt (or a run's final prompt) on a split")
    p.add_argument("config", type=Path)
    p.add_argument("--run", type=Path, help="use this run's final values")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("--no-cache", action="store_true")

    p = command("history", _history, "list a run's steps")
    p.add_argument("run", type=Path)
    p = command("diff", _diff, "show how the prompts changed between two steps")
    p.add_argument("run", type=Path)
    p.add_argument("a", type=int)
    p.add_argument("b", type=int)
    p = command("export", _export, "write a run's final prompts as text and JSON")
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, help="folder (default: RUN/export)")
    p = command("report", _report, "write a run's HTML report")
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path)
    for name, decision in (("approve", "approved"), ("reject", "rejected")):
        p = command(name, _decide, f"{name} a step that awaits review")
        p.add_argument("run", type=Path)
        p.add_argument("step", type=int)
        p.add_argument("--note", default="")
        p.set_defaults(decision=decision)
    p = command("serve", _serve, "serve the embedded model as an OpenAI-compatible endpoint")
    p.add_argument("--model", default="local",
                   help="local (0.5B, the default), local:1.5b, or a GGUF file path")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--n-parallel", type=int, default=None,
                   help="sequences decoded together (default: the engine's)")
    return parser


def _serve(args: argparse.Namespace) -> int:
    from textprop.serve import main as serve

    return serve(args.model, port=args.port, host=args.host, n_parallel=args.n_parallel)


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

    run_dir = args.run_dir or Path(config.run.dir) / config.run.name
    if not args.resume and (run_dir / "ledger.sqlite3").exists():
        run_dir = run_dir.with_name(f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "config.toml").exists():
        shutil.copyfile(config_path, run_dir / "config.toml")
        if args.set:
            (run_dir / "overrides.json").write_text(json.dumps(_overrides(args), indent=2))
    say = _printer(args)
    trainer, engines = build_trainer(config, run_dir, progress=say, counter=_bar(args))
    say(f"run folder: {run_dir}")
    say(f"LLM call cache: {engines.cache_path or 'off'}")
    if not trainer.ledger.meta():
        task = config.task
        trainer.ledger.set_meta(
            name=config.run.name, started_at=time.time(), status="running",
            task=task.builtin or task.bbh or task.gsm8k or task.train,
            engines={role: config.engine_spec(role)
                     for role in ("forward", "feedback", "optimizer")})
    result = trainer.run(resume=args.resume)
    from textprop.report import write_report

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


def _usage(meter: Any) -> dict[str, Any]:
    usage = meter.usage()
    return usage.to_dict() if hasattr(usage, "to_dict") else str(usage)


def _printer(args: argparse.Namespace):
    def say(message: str) -> None:
        if not (args.quiet or args.json):
            print(message, file=sys.stderr, flush=True)
    return say


def _bar(args: argparse.Namespace):
    """A one-line progress bar for evaluations, on a terminal only."""
    if args.quiet or args.json or not sys.stderr.isatty():
        return None

    def show(label: str, done: int, total: int) -> None:
        filled = round(24 * done / max(total, 1))
        end = "\n" if done == total else ""
        print(f"\r  {label:<5} [{'#' * filled}{'.' * (24 - filled)}] {done}/{total}", end=end,
              file=sys.stderr, flush=True)
    return show


# --- eval ----------------------------------------------------------------------------------
def _eval(args: argparse.Namespace) -> int:
    from textprop._sync import run_sync
    from textprop.ledger import Ledger
    from textprop.train.build import build_trainer
    from textprop.train.config import load_config

    overrides = {"cache.enabled": False} if args.no_cache else {}
    config = load_config(args.config, overrides)
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        trainer, _ = build_trainer(config, Path(scratch))
        if args.run:
            final = Ledger.in_run(args.run).meta().get("final", {}).get("values")
            last = Ledger.in_run(args.run).last_step()
            trainer._apply(final or last["values"])
        dataset = getattr(trainer.splits, args.split)
        row = run_sync(trainer.evaluate(dataset, args.split))
    if args.json:
        print(json.dumps({"split": args.split, "score": row.score, "n": row.n}))
    else:
        print(f"{args.split}: {row.score:.3f} on {row.n} examples")
    return 0


# --- reading a run -------------------------------------------------------------------------
def _ledger(run: Path):
    from textprop.errors import ConfigError
    from textprop.ledger import Ledger

    if not (run / "ledger.sqlite3").exists():
        raise ConfigError("not a run folder (no ledger.sqlite3)", source=str(run))
    return Ledger.in_run(run)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _history(args: argparse.Namespace) -> int:
    steps = _ledger(args.run).steps()
    if args.json:
        print(json.dumps(steps, indent=2))
        return 0
    print(f"{'step':>4}  {'epoch':>5}  {'status':<9}  {'batch':>6}  {'val':>6}  "
          f"{'test':>6}  reason")
    for s in steps:
        print(f"{s['step']:>4}  {s['epoch'] + 1:>5}  {s['status']:<9}  "
              f"{_fmt(s['batch_score']):>6}  {_fmt(s['val_score']):>6}  "
              f"{_fmt(s['test_score']):>6}  {s['reason']}")
    return 0


def _diff(args: argparse.Namespace) -> int:
    import difflib

    ledger = _ledger(args.run)
    a, b = ledger.step(args.a), ledger.step(args.b)
    if a is None or b is None:
        from textprop.errors import ConfigError

        raise ConfigError(f"no step {args.a if a is None else args.b} in this run",
                          source=str(args.run))
    out = {}
    for name in a["values"]:
        out[name] = "".join(difflib.unified_diff(
            a["values"][name].splitlines(keepends=True),
            b["values"][name].splitlines(keepends=True),
            fromfile=f"{name}@{args.a}", tofile=f"{name}@{args.b}"))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name, text in out.items():
            print(text or f"{name}: no change between steps {args.a} and {args.b}")
    return 0


def _final_values(ledger: Any) -> dict[str, str]:
    final = ledger.meta().get("final", {}).get("values")
    return final or ledger.last_step()["values"]


def _export(args: argparse.Namespace) -> int:
    ledger = _ledger(args.run)
    values = _final_values(ledger)
    out = args.out or args.run / "export"
    out.mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        (out / f"{name}.txt").write_text(value + "\n", encoding="utf-8")
    (out / "prompts.json").write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"folder": str(out), "files": sorted(p.name for p in out.iterdir())})
          if args.json else f"exported {len(values)} prompt(s) to {out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from textprop.report import write_report

    _ledger(args.run).close()
    path = write_report(args.run, args.out)
    print(json.dumps({"report": str(path)}) if args.json else f"report: {path}")
    return 0


def _decide(args: argparse.Namespace) -> int:
    from textprop.errors import ConfigError

    ledger = _ledger(args.run)
    step = ledger.step(args.step)
    if step is None or step["status"] != "pending":
        raise ConfigError(f"step {args.step} is not awaiting review", source=str(args.run))
    ledger.decide(args.step, args.decision, args.note)
    print(f"step {args.step} {args.decision}; continue with: textprop optimize "
          f"{args.run / 'config.toml'} --run-dir {args.run} --resume")
    return 0


if __name__ == "__main__":
    sys.exit(main())
