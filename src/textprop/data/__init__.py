"""Datasets: the user's files, generated built-in tasks, and benchmarks split as TextGrad does.

    splits = builtin_task("object_counting", n_train=50, n_val=100, n_test=100, seed=0)
    data = load_dataset("data/train.jsonl", input_field="question", target_field="answer")
    for batch in splits.train.batches(3, seed=epoch): ...
"""

from textprop.data.benchmarks import load_bbh, load_gsm8k
from textprop.data.dataset import Dataset, Example, Splits, load_dataset
from textprop.data.tasks import BUILTIN_TASKS, BuiltinTask, builtin_task

__all__ = [
    "BUILTIN_TASKS", "BuiltinTask", "Dataset", "Example", "Splits", "builtin_task",
    "load_bbh", "load_dataset", "load_gsm8k",
]
