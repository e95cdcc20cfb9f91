"""TextGrad's global backward engine, kept only so TextGrad code runs unchanged.

textprop's own API takes explicit engines; nothing in the library reads this global except
where an engine argument was left out (the TextGrad calling style).
"""

from __future__ import annotations

from typing import Any

from textprop.engines.base import Engine, as_engine


class SingletonBackwardEngine:
    _instance: SingletonBackwardEngine | None = None
    engine: Engine | None

    def __new__(cls) -> SingletonBackwardEngine:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
            cls._instance.engine = None
        return cls._instance

    def set_engine(self, engine: Any, override: bool = False) -> None:
        if self.engine is not None and not override:
            raise RuntimeError("a backward engine is already set; pass override=True to "
                               "replace it")
        self.engine = None if engine is None else as_engine(engine)

    def get_engine(self) -> Engine | None:
        return self.engine


def set_backward_engine(engine: Any, override: bool = False, **kwargs: Any) -> None:
    if isinstance(engine, str):  # TextGrad's engine names, through TextGrad's get_engine
        from textprop.engine import get_engine

        engine = get_engine(engine, **kwargs)
    SingletonBackwardEngine().set_engine(engine, override=override)


def get_backward_engine() -> Engine | None:
    return SingletonBackwardEngine().get_engine()
