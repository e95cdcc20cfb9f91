"""Median wall time of `import textprop` in fresh interpreters (5 runs).

    python bench/import_time.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys

CODE = "import time; t = time.perf_counter(); import textprop; print(time.perf_counter() - t)"


def main(runs: int = 5) -> None:
    times = [float(subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                                  check=True).stdout) for _ in range(runs)]
    print(f"import textprop: median {statistics.median(times):.3f} s over {runs} runs "
          f"(min {min(times):.3f}, max {max(times):.3f})")


if __name__ == "__main__":
    main()
