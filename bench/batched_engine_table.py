"""Print the markdown table of bench/results/batched_engine.json (for docs/benchmarks.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/batched_engine.json")
cells = json.loads(path.read_text())["cells"]
after = next((key.split("/")[1] for key in cells if key.startswith("throughput/after")), "after")
print(f"| in flight | before tok/s | {after} tok/s | ratio | before req/s | {after} req/s |")
print("| --- | --- | --- | --- | --- | --- |")
for k in (1, 4, 8, 16):
    b, a = cells.get(f"throughput/before/{k}"), cells.get(f"throughput/{after}/{k}")
    if not (b and a):
        print(f"| {k} | {b['tokens_per_s'] if b else 'not run'} | "
              f"{a['tokens_per_s'] if a else 'not run'} | | | |")
        continue
    print(f"| {k} | {b['tokens_per_s']} | {a['tokens_per_s']} | "
          f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x | {b['requests_per_s']} | "
          f"{a['requests_per_s']} |")
for name in ("before", after):
    cell = cells.get(f"demo/{name}")
    print(f"demo/{name}: {cell['wall_s']} s" if cell else f"demo/{name}: not run")
