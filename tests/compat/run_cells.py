"""Run a notebook's code cells in order in one namespace, as a Jupyter kernel would.

    python run_cells.py cells.json results.json

`cells.json` is a list of cell sources. A line starting with `!` or `%` is an IPython shell
or magic command, not Python: it is not run (the notebooks' `!pip install textgrad` must
not install anything). A cell's last expression is evaluated and `repr`'d, as a notebook
displays it. `results.json` gets one entry per cell: "ok" or "<ExceptionType>: message".
"""

from __future__ import annotations

import ast
import json
import sys
import traceback


def _python(source: str) -> str:
    return "\n".join(f"pass  # IPython: {line.strip()}" if line.lstrip()[:1] in ("!", "%")
                     else line for line in source.splitlines())


def run_cell(source: str, namespace: dict, name: str) -> None:
    tree = ast.parse(_python(source), filename=name)
    last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    if last is not None:
        tree.body = tree.body[:-1]
    exec(compile(tree, name, "exec"), namespace)  # noqa: S102 - running the notebook is the test
    if last is not None:
        value = eval(compile(ast.Expression(last.value), name, "eval"), namespace)  # noqa: S307
        if value is not None:
            print(repr(value)[:2000])


def main(cells_path: str, results_path: str) -> None:
    with open(cells_path, encoding="utf-8") as handle:
        cells = json.load(handle)
    namespace: dict = {"__name__": "__main__"}
    results = []
    for index, source in enumerate(cells):
        print(f"----- cell {index}", flush=True)
        try:
            run_cell(source, namespace, f"<cell {index}>")
        except BaseException as exc:  # noqa: BLE001 - each cell's outcome is the result
            traceback.print_exc()
            results.append(f"{type(exc).__name__}: {exc}")
        else:
            results.append("ok")
        sys.stdout.flush()
        with open(results_path, "w", encoding="utf-8") as handle:
            json.dump(results, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
