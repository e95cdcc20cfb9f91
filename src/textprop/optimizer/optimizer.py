"""TextGrad's `optimizer.optimizer` module path."""

from textprop.optim import (
    TGD,
    Optimizer,
    TextualGradientDescent,
    TextualGradientDescentwithMomentum,
)

__all__ = ["TGD", "Optimizer", "TextualGradientDescent", "TextualGradientDescentwithMomentum"]
