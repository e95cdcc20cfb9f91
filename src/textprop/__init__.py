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

# The optimization API, loaded on first use (`import textprop` stays light).
_LAZY = {
    "Trainer": "textprop.train.trainer", "TrainerSettings": "textprop.train.trainer",
    "RunResult": "textprop.train.trainer", "RunCallback": "textprop.train.events",
    "PromptPipeline": "textprop.train.pipelines", "ChainPipeline": "textprop.train.pipelines",
    "ChainStep": "textprop.train.pipelines", "Dataset": "textprop.data.dataset",
    "Splits": "textprop.data.dataset", "Example": "textprop.data.dataset",
    "load_dataset": "textprop.data.dataset", "open_run": "textprop.train.reader",
    "Run": "textprop.train.reader", "get_metric": "textprop.metrics",
    "Demonstrations": "textprop.demos", "Demo": "textprop.demos",
    "refine": "textprop.refinement", "arefine": "textprop.refinement",
    "RefineResult": "textprop.refinement",
}
_RENAMED = {"refine_judge": ("textprop.refinement", "judge"),
            "refine_metric": ("textprop.refinement", "metric"),
            "refine_tests": ("textprop.refinement", "tests")}


def __getattr__(name: str):  # noqa: ANN202 - `textprop.tasks` loads on first use
    import importlib

    if name in ("tasks", "utils"):
        return importlib.import_module(f"textprop.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _RENAMED:
        module, attr = _RENAMED[name]
        return getattr(importlib.import_module(module), attr)
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
    # the optimization API (loaded on first use)
    "ChainPipeline", "ChainStep", "Dataset", "Demo", "Demonstrations", "Example",
    "PromptPipeline", "Run", "RunCallback", "RunResult", "Splits", "Trainer",
    "TrainerSettings", "get_metric", "load_dataset", "open_run",
    "RefineResult", "arefine", "refine", "refine_judge", "refine_metric", "refine_tests",
]
