"""textprop: optimize prompts and other text by textual backpropagation.

    import textprop as tp
    prompt = tp.Variable("Answer the question.", role_description="system prompt")
    answer = tp.BlackboxLLM(engine, prompt)(question)
    loss = tp.TextLoss("Is the answer correct? Be concise.", engine)(answer)
    loss.backward(engine)
    tp.TGD([prompt], engine=engine).step()

TextGrad code runs with `import textprop as tg`: its public names are all here (`tg.tasks`
loads on first use).
"""

from textprop import autograd, loss
from textprop.config import SingletonBackwardEngine, set_backward_engine
from textprop.engine import get_engine
from textprop.engines import Engine, EngineLM, Request, ScriptedEngine
from textprop.errors import (
    BudgetExceeded,
    ConfigError,
    EngineError,
    GraphError,
    TextpropError,
)
from textprop.functions import (
    BatchReduce,
    BlackboxLLM,
    FormattedLLMCall,
    LLMCall,
    Module,
    StringBasedFunction,
    Sum,
    reduce,
    sum,
)
from textprop.functions.combine import aggregate
from textprop.images import Image
from textprop.logger import logger
from textprop.losses import ImageQALoss, MetricLoss, MultiFieldEvaluation, TextLoss
from textprop.optim import (
    TGD,
    Optimizer,
    TextualGradientDescent,
    TextualGradientDescentwithMomentum,
)
from textprop.variable import Gradient, Variable


def __getattr__(name: str):  # noqa: ANN202 - `textprop.tasks` loads on first use
    if name in ("tasks", "utils"):
        import importlib

        return importlib.import_module(f"textprop.{name}")
    raise AttributeError(f"module 'textprop' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "TGD", "BatchReduce", "BlackboxLLM", "BudgetExceeded", "ConfigError", "Engine",
    "EngineError", "EngineLM", "FormattedLLMCall", "Gradient", "GraphError", "Image",
    "ImageQALoss", "LLMCall", "MetricLoss", "Module", "MultiFieldEvaluation", "Optimizer",
    "Request", "ScriptedEngine",
    "SingletonBackwardEngine", "StringBasedFunction", "Sum", "TextLoss", "TextpropError",
    "TextualGradientDescent", "TextualGradientDescentwithMomentum", "Variable", "aggregate",
    "autograd", "get_engine", "logger", "loss",
    "reduce", "set_backward_engine", "sum",
]
