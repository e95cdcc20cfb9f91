"""TextGrad's `tasks`: `load_task`, `load_instance_task` and `DataLoader`, on local files.

    train_set, val_set, test_set, eval_fn = load_task("BBH_object_counting", engine)
    for batch_x, batch_y in DataLoader(train_set, batch_size=3): ...

Data comes from the folder in `TEXTPROP_DATA` (or `data_dir=`), see `textprop.tasks.files`.
Task names are TextGrad's: `BBH_<task>` for every BIG-Bench Hard task, `GSM8K_DSPy`, and the
instance tasks `MMLU_<subject>`.
"""

from __future__ import annotations

from typing import Any

from textprop.errors import ConfigError
from textprop.prompts import render
from textprop.tasks.datasets import BigBenchHard, Dataset, GSM8K_DSPy, MMLUInstanceDataset
from textprop.tasks.evaluation import (
    eval_string_based,
    parse_integer_answer,
    string_based_equality_fn,
)
from textprop.tasks.files import DATA_ENV, data_file
from textprop.tasks.loader import DataLoader
from textprop.variable import Variable

AVAILABLE_DATASETS = ["BBH_object_counting", "BBH_word_sorting", "GSM8K_DSPy"]
AVAILABLE_INSTANCE_DATASETS = ["MMLU_machine_learning", "MMLU_college_physics"]
BBH_ROLES = ["Question for the task", "Ground truth answer",
             "Reasoning and prediction from the language model"]


def _equality_eval_fn() -> Any:
    from textprop.functions.python_function import StringBasedFunction

    return StringBasedFunction(string_based_equality_fn,
                               function_purpose=render("task_equality_purpose"))


def load_task(task_name: str, evaluation_api: Any = None, *args: Any,
              data_dir: Any = None, **kwargs: Any) -> tuple[Dataset, Dataset, Dataset, Any]:
    """`(train_set, val_set, test_set, eval_fn)` for a TextGrad task name.

    As in TextGrad: `BBH_object_counting` and `GSM8K_DSPy` are scored by integer equality (a
    `StringBasedFunction`, no LLM call); the other BBH tasks by `evaluation_api` judging with
    a `MultiFieldTokenParsedEvaluation` whose verdict is between <ACCURACY> tags.
    """
    if task_name.startswith("BBH_"):
        task = task_name[len("BBH_"):]
        train, val, test = (BigBenchHard(task, *args, split=s, data_dir=data_dir, **kwargs)
                            for s in ("train", "val", "test"))
        if task == "object_counting":
            return train, val, test, _equality_eval_fn()
        from textprop.losses import MultiFieldTokenParsedEvaluation

        instruction = Variable(render("task_bbh_evaluation"), requires_grad=False,
                               role_description="evaluation instruction for the task")
        eval_fn = MultiFieldTokenParsedEvaluation(instruction, role_descriptions=BBH_ROLES,
                                                  engine=evaluation_api,
                                                  parse_tags=["<ACCURACY>", "</ACCURACY>"])
        return train, val, test, eval_fn
    if task_name == "GSM8K_DSPy":
        train, val, test = (GSM8K_DSPy(*args, split=s, data_dir=data_dir, **kwargs)
                            for s in ("train", "val", "test"))
        return train, val, test, _equality_eval_fn()
    raise ConfigError(f"Task {task_name} not found: textprop has TextGrad's BBH_<task> "
                      "(e.g. BBH_object_counting) and GSM8K_DSPy")


def load_instance_task(task_name: str, evaluation_api: Any = None, *args: Any,
                       data_dir: Any = None, **kwargs: Any) -> MMLUInstanceDataset:
    """The test set of an instance task (`MMLU_<subject>`, e.g. MMLU_machine_learning)."""
    if task_name.startswith("MMLU_"):
        return MMLUInstanceDataset(evaluation_api, task_name[len("MMLU_"):], *args,
                                   data_dir=data_dir, **kwargs)
    raise ConfigError(f"Instance task {task_name} not found: textprop has TextGrad's "
                      "MMLU_<subject> tasks (GPQA and LeetCodeHardEval need data that is "
                      "not available offline)")


__all__ = ["AVAILABLE_DATASETS", "AVAILABLE_INSTANCE_DATASETS", "DATA_ENV", "BigBenchHard",
           "DataLoader", "Dataset", "GSM8K_DSPy", "MMLUInstanceDataset", "data_file",
           "eval_string_based", "load_instance_task", "load_task", "parse_integer_answer",
           "string_based_equality_fn"]
