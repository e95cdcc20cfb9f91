"""TextGrad's `DataLoader`: batches of a dataset, columns zipped when items are tuples."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any


class DataLoader:
    """`for batch_x, batch_y in DataLoader(train_set, batch_size=3, shuffle=True)`.

    Shuffling uses numpy's global generator when numpy is installed, as TextGrad does, so a
    script's `np.random.seed(s)` gives TextGrad's batches; without numpy, `random`'s.
    """

    def __init__(self, data: Sequence[Any], batch_size: int = 32, shuffle: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.indices = list(range(len(data)))

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        if self.shuffle:
            _shuffle(self.indices)
        for start in range(0, len(self.indices), self.batch_size):
            batch = [self.data[i] for i in self.indices[start:start + self.batch_size]]
            yield tuple(zip(*batch, strict=True)) if isinstance(batch[0], tuple) else batch


def _shuffle(indices: list[int]) -> None:
    try:
        import numpy as np
    except ImportError:
        random.shuffle(indices)
        return
    order = np.arange(len(indices))
    np.random.shuffle(order)
    indices[:] = [indices[int(i)] for i in order]
