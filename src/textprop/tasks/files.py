"""Where TextGrad's task data lives here: a local folder, never a download.

The folder is `data_dir=` or the `TEXTPROP_DATA` environment variable, laid out as

    bbh/bbh/<task>.json              BIG-Bench Hard (suzgunmirac/BIG-Bench-Hard)
    gsm8k/train.jsonl, test.jsonl    GSM8K (openai/grade-school-math)
    mmlu/test/<subject>_test.csv     MMLU test split (question, A, B, C, D, answer letter)
"""

from __future__ import annotations

import os
from pathlib import Path

from textprop.errors import ConfigError

DATA_ENV = "TEXTPROP_DATA"
LAYOUT = ("bbh/bbh/<task>.json, gsm8k/train.jsonl and gsm8k/test.jsonl, "
          "mmlu/test/<subject>_test.csv")


def data_file(relative: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The path of `relative` inside the data folder; one message when it is missing."""
    root = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
    if not root:
        raise ConfigError(f"TextGrad's tasks read local files: set {DATA_ENV} to a folder "
                          f"laid out as {LAYOUT} (or pass data_dir=...); looked for "
                          f"<{DATA_ENV}>/{relative}")
    path = Path(root).expanduser() / relative
    if not path.is_file():
        where = "data_dir" if data_dir is not None else DATA_ENV
        raise ConfigError(f"no file {path} (from {where}={root!s}): the folder must be laid "
                          f"out as {LAYOUT}")
    return path
