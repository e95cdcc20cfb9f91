"""TextGrad's task datasets from local files, with TextGrad's splits and items.

Items are what TextGrad's datasets return: `(question, answer)` for BBH and GSM8K, and
`(question, answer, test_time_objective, eval_fn)` for the MMLU instance tasks. The splits
are textprop's `load_bbh` / `load_gsm8k` ones, which are TextGrad's.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from functools import cache
from typing import Any

from textprop.data.benchmarks import load_bbh, load_gsm8k
from textprop.data.dataset import Dataset as Rows
from textprop.errors import ConfigError
from textprop.prompts import render
from textprop.tasks.evaluation import eval_string_based
from textprop.tasks.files import data_file
from textprop.variable import Variable

DataDir = str | os.PathLike[str] | None
SPLITS = ("train", "val", "test")


def _split(split: str, allowed: tuple[str, ...] = SPLITS) -> str:
    if split not in allowed:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(allowed)}")
    return split


class Dataset:
    """A sequence of items with TextGrad's task-description methods."""

    task_description: str = ""

    def __init__(self, items: list[Any]) -> None:
        self._items = items

    def __getitem__(self, index: int) -> Any:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def get_task_description(self) -> str:
        return self.task_description

    get_default_task_instruction = get_task_description


class BigBenchHard(Dataset):
    """BBH task `task_name` (e.g. "object_counting"): train 0-49, val 50-149, test 150-."""

    def __init__(self, task_name: str, root: DataDir = None, split: str = "train",
                 *args: Any, data_dir: DataDir = None, **kwargs: Any) -> None:
        path = data_file(f"bbh/bbh/{task_name}.json", data_dir if data_dir is not None else root)
        rows: Rows = getattr(_bbh(str(path)), _split(split))
        super().__init__([(e.input, e.target) for e in rows])
        self.task_name, self.split = task_name, split
        self.task_description = render("task_bbh_description")


@cache
def _bbh(path: str):  # noqa: ANN202 - the Splits of one file, read once per process
    return load_bbh(path)


class GSM8K_DSPy(Dataset):  # noqa: N801 - TextGrad's name
    """GSM8K split as DSPy and TextGrad split it; items are ("Question: ...", "<integer>")."""

    def __init__(self, root: DataDir = None, split: str = "train", *,
                 data_dir: DataDir = None) -> None:
        folder = data_dir if data_dir is not None else root
        splits = _gsm8k(str(data_file("gsm8k/train.jsonl", folder)),
                        str(data_file("gsm8k/test.jsonl", folder)))
        rows: Rows = getattr(splits, _split(split))
        super().__init__([(f"Question: {e.input}", e.target) for e in rows])
        self.split = split
        self.task_description = render("task_gsm8k_description")


@cache
def _gsm8k(train: str, test: str):  # noqa: ANN202
    return load_gsm8k(train, test)


class MMLUInstanceDataset(Dataset):
    """An MMLU subject's test questions, each with its test-time objective and metric.

    Only the test split exists locally (MMLU's dev and validation files are not shipped).
    """

    def __init__(self, evaluation_api: Any, subset: str, root: DataDir = None,
                 split: str = "test", max_samples: int = -1, *,
                 data_dir: DataDir = None) -> None:
        _split(split, ("test",))
        path = data_file(f"mmlu/test/{subset}_test.csv", data_dir if data_dir is not None
                         else root)
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [r for r in csv.reader(handle) if r]
        for number, row in enumerate(rows, 1):
            if len(row) != 6 or row[5] not in "ABCD":
                raise ConfigError("expected 6 columns: question, A, B, C, D, answer letter",
                                  source=str(path), line=number)
        if max_samples > 0:
            rows = rows[:max_samples]
        self.evaluation_api = evaluation_api
        self.subset, self.split = subset, split
        self.task_description = render("task_mmlu_instruction")
        super().__init__([self._item(row) for row in rows])

    def _item(self, row: list[str]) -> tuple[str, str, Callable, Callable]:
        question = render("task_mmlu_query", question=row[0], a=row[1], b=row[2], c=row[3],
                          d=row[4])
        answer = row[5]
        return question, answer, self._objective(question), self._metric(answer)

    def _objective(self, question: str) -> Callable[[Variable], Variable]:
        from textprop.losses import MultiChoiceTestTime

        eval_fn = MultiChoiceTestTime(render("task_mmlu_test_time"), engine=self.evaluation_api)

        def test_time_objective(instance: Variable) -> Variable:
            return eval_fn(question, instance)

        return test_time_objective

    @staticmethod
    def _metric(answer: str) -> Callable[[Variable], float]:
        def eval_fn(response: Variable) -> float:
            return eval_string_based(response.value, answer)

        return eval_fn
