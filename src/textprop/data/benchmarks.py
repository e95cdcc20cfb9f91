"""BIG-Bench Hard and GSM8K from local files, split exactly as TextGrad splits them.

Same splits, same order: results are comparable with TextGrad's papers and examples. The
files themselves are not shipped; point these loaders at a copy of the original repositories'
data (suzgunmirac/BIG-Bench-Hard `bbh/<task>.json`, openai/grade-school-math `data/*.jsonl`).
"""

from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

from textprop.data.dataset import Dataset, Example, Splits, load_dataset
from textprop.errors import ConfigError

BBH_TRAIN, BBH_VAL = 50, 100  # examples[0:50], [50:150], the rest is test
GSM8K_TRAIN, GSM8K_VAL = 200, 300
GSM8K_SHUFFLE_SEED = 0
_FINAL_ANSWER = re.compile(r"####\s*(-?[\d,]+)\s*\Z")


def load_bbh(path: str | Path) -> Splits:
    """A BBH task file split in file order: train = 0-49, val = 50-149, test = 150-end.

    This is TextGrad's `BigBenchHard` split (textgrad/tasks/big_bench_hard.py), no shuffling.
    """
    path = Path(path)
    task = path.stem
    data = load_dataset(path, format="json")
    if len(data) <= BBH_TRAIN + BBH_VAL:
        raise ConfigError(f"has {len(data)} examples; a BBH task needs more than "
                          f"{BBH_TRAIN + BBH_VAL} for TextGrad's split", source=str(path))
    examples = [replace(e, id=f"bbh-{task}-{i}") for i, e in enumerate(data)]
    bounds = (0, BBH_TRAIN, BBH_TRAIN + BBH_VAL, len(examples))
    train, val, test = (
        Dataset(examples[a:b], f"bbh-{task}-{split}")
        for split, a, b in zip(("train", "val", "test"), bounds, bounds[1:], strict=False)
    )
    return Splits(train, val, test)


def load_gsm8k(train_path: str | Path, test_path: str | Path) -> Splits:
    """GSM8K split as TextGrad's `GSM8K_DSPy` (and DSPy's `GSM8K`) does it.

    The train file's rows are shuffled with `random.Random(0).shuffle`: the first 200 are
    train, the next 300 val. Test is the whole test file, shuffled the same way (TextGrad
    shuffles it too, so its "first 100 test examples" are these). The target is the integer
    after "####" without thousands commas; the full worked answer stays in `fields["answer"]`.
    """
    official_train = _gsm8k_file(train_path, "train")
    official_test = _gsm8k_file(test_path, "test")
    if len(official_train) < GSM8K_TRAIN + GSM8K_VAL:
        raise ConfigError(f"has {len(official_train)} rows; TextGrad's split needs at least "
                          f"{GSM8K_TRAIN + GSM8K_VAL}", source=str(train_path))
    random.Random(GSM8K_SHUFFLE_SEED).shuffle(official_train)
    random.Random(GSM8K_SHUFFLE_SEED).shuffle(official_test)
    return Splits(
        Dataset(official_train[:GSM8K_TRAIN], "gsm8k-train"),
        Dataset(official_train[GSM8K_TRAIN:GSM8K_TRAIN + GSM8K_VAL], "gsm8k-val"),
        Dataset(official_test, "gsm8k-test"),
    )


def _gsm8k_file(path: str | Path, split: str) -> list[Example]:
    """The rows of one GSM8K file in file order, with the final integer as target."""
    rows = load_dataset(path, input_field="question", target_field="answer", format="jsonl")
    examples = []
    for index, row in enumerate(rows):
        match = _FINAL_ANSWER.search(row.target.strip())
        if match is None:
            file, _, line = row.source.rpartition(":")
            raise ConfigError('does not end with "#### <integer>"', source=file,
                              line=int(line), field="answer")
        target = str(int(match.group(1).replace(",", "")))
        examples.append(replace(row, id=f"gsm8k-{split}-{index}", target=target,
                                fields={**row.fields, "answer": row.target}))
    return examples
