"""TextGrad's `tasks.base` module path."""

from textprop.tasks.datasets import Dataset
from textprop.tasks.loader import DataLoader

__all__ = ["DataLoader", "Dataset"]
