"""textprop: optimize prompts and other text by textual backpropagation.

    import textprop as tp
    prompt = tp.Variable("Answer the question.", role_description="system prompt")
    answer = tp.BlackboxLLM(engine, prompt)(question)
    loss = tp.TextLoss("Is the answer correct? Be concise.", engine)(answer)
    loss.backward(engine)
    tp.TGD([prompt], engine=engine).step()

TextGrad code runs with `import textprop as tg`: its public names are all here.
"""

from textprop import autograd, loss
from textprop.config import SingletonBackwardEngine, set_backward_engine
from textprop.engines import Engine, EngineLM, Request, ScriptedEngine, get_engine
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
from textprop.losses import MetricLoss, MultiFieldEvaluation, TextLoss
from textprop.optim import TGD, Optimizer, TextualGradientDescent
from textprop.variable import Gradient, Variable

__version__ = "0.1.0"

__all__ = [
    "TGD", "BatchReduce", "BlackboxLLM", "BudgetExceeded", "ConfigError", "Engine",
    "EngineError", "EngineLM", "FormattedLLMCall", "Gradient", "GraphError", "LLMCall",
    "MetricLoss", "Module", "MultiFieldEvaluation", "Optimizer", "Request", "ScriptedEngine",
    "SingletonBackwardEngine", "StringBasedFunction", "Sum", "TextLoss", "TextpropError",
    "TextualGradientDescent", "Variable", "aggregate", "autograd", "get_engine", "loss",
    "reduce", "set_backward_engine", "sum",
]
