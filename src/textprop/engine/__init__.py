"""TextGrad's `engine` module path: `EngineLM` and `get_engine`."""

from textprop.engines.base import EngineLM


def get_engine(engine_name: str, **kwargs):  # noqa: ANN201 - mirrors TextGrad
    from textprop.engines.registry import get_engine as _get_engine

    return _get_engine(engine_name, **kwargs)


__all__ = ["EngineLM", "get_engine"]
