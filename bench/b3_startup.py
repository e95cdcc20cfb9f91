"""B3: start-up cost of TextGrad 0.1.8 vs textprop, in fresh interpreters.

Each sample is a new interpreter (its own venv's python) that times its import with
perf_counter; the whole process is timed too (interpreter start + import + exit). Samples of
the two libraries alternate so machine noise hits both alike. `import textgrad` runs in a
scratch folder with LITELLM_LOCAL_MODEL_COST_MAP=True (otherwise litellm fetches its model
price list from the network at import); what each import leaves in the folder is recorded
(TextGrad writes ./logs/<timestamp>.jsonl). textprop's CLI is timed with `textprop --help`;
TextGrad has no command line.

    python bench/b3_startup.py [--runs 9] [--out bench/results/b3_startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TG_PYTHON = ROOT / "bench/.venv-textgrad/bin/python"
PROBE = ("import time; t = time.perf_counter(); import {module}; "
         "print(time.perf_counter() - t)")


def sample(python: Path | str, argv: list[str], env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="b3-") as cwd:
        t = time.perf_counter()
        proc = subprocess.run([str(python), *argv], cwd=cwd, env=env, capture_output=True,
                              text=True)
        wall = time.perf_counter() - t
        left = sorted(str(p.relative_to(cwd)) for p in Path(cwd).rglob("*"))
    if proc.returncode:
        raise RuntimeError(f"{python} {argv} failed: {proc.stderr[-1500:]}")
    first = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""
    try:
        inner = float(first)
    except ValueError:
        inner = None
    return {"wall_s": wall, "import_s": inner, "files_left": left}


def stats(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "n": len(values)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=9)
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/b3_startup.json")
    args = p.parse_args()
    if not TG_PYTHON.exists():
        sys.exit("bench/.venv-textgrad is missing: run bench/setup-textgrad")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    textprop_cli = Path(sys.executable).with_name("textprop")
    cases = {
        "import textgrad": (TG_PYTHON, ["-c", PROBE.format(module="textgrad")]),
        "import textprop": (Path(sys.executable), ["-c", PROBE.format(module="textprop")]),
        "textprop --help": (textprop_cli, ["--help"]),
        "python -c pass (textgrad venv)": (TG_PYTHON, ["-c", "pass"]),
        "python -c pass (textprop venv)": (Path(sys.executable), ["-c", "pass"]),
    }
    for python, argv in cases.values():  # warm the OS file cache once, not measured
        sample(python, argv, env)
    samples: dict[str, list[dict]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, (python, argv) in cases.items():
            samples[name].append(sample(python, argv, env))
    results = {
        "benchmark": "b3_startup",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, "
                   f"{platform.python_implementation()} {platform.python_version()}",
        "command": " ".join(["python"] + sys.argv), "runs": args.runs,
        "cases": {}, "textgrad_cli": "none: TextGrad 0.1.8 installs no console script",
    }
    for name, rows in samples.items():
        entry = {"process_wall_s": stats([r["wall_s"] for r in rows]),
                 "files_left_in_cwd": rows[0]["files_left"]}
        if rows[0]["import_s"] is not None:
            entry["import_s"] = stats([r["import_s"] for r in rows])
        results["cases"][name] = entry
    tg = results["cases"]["import textgrad"]["import_s"]["median"]
    tp = results["cases"]["import textprop"]["import_s"]["median"]
    results["import_ratio"] = round(tg / tp, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    for name, entry in results["cases"].items():
        inner = entry.get("import_s", {}).get("median")
        print(f"{name:34} process {entry['process_wall_s']['median']:.3f} s"
              + (f"  import {inner:.3f} s" if inner is not None else "")
              + (f"  left in cwd: {entry['files_left_in_cwd']}"
                 if entry["files_left_in_cwd"] else ""))
    print(f"import textgrad / import textprop: {results['import_ratio']}x  raw: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
