"""TextGrad's `loss` module path (`textprop.loss.MultiFieldEvaluation`); see `losses`."""

from textprop.losses import Evaluation, MetricLoss, MultiFieldEvaluation, TextLoss

__all__ = ["Evaluation", "MetricLoss", "MultiFieldEvaluation", "TextLoss"]
