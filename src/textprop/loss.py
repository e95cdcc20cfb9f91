"""TextGrad's `loss` module path (`textprop.loss.MultiFieldEvaluation`); see `losses`."""

from textprop.losses import (
    Evaluation,
    ImageQALoss,
    MetricLoss,
    MultiChoiceTestTime,
    MultiFieldEvaluation,
    MultiFieldTokenParsedEvaluation,
    TextLoss,
)

__all__ = ["Evaluation", "ImageQALoss", "MetricLoss", "MultiChoiceTestTime", "MultiFieldEvaluation",
           "MultiFieldTokenParsedEvaluation", "TextLoss"]
