"""Optimizers that rewrite variables from their feedback."""

from textprop.optim.momentum import TextualGradientDescentwithMomentum
from textprop.optim.optimizer import Optimizer
from textprop.optim.tgd import TGD, TextualGradientDescent, UpdateRecord

__all__ = ["TGD", "Optimizer", "TextualGradientDescent", "TextualGradientDescentwithMomentum",
           "UpdateRecord"]
