"""TextGrad's `optimizer` module path; the optimizers live in `textprop.optim`."""

from textprop.optim import (
    TGD,
    Optimizer,
    TextualGradientDescent,
    TextualGradientDescentwithMomentum,
)

__all__ = ["TGD", "Optimizer", "TextualGradientDescent", "TextualGradientDescentwithMomentum"]
