"""The validation gate that decides whether a proposed revision is kept."""

from __future__ import annotations

import pytest

from textprop.train.acceptance import decide, sign_test_p


def scores(*values: float) -> dict[str, float]:
    return {f"e{i}": v for i, v in enumerate(values)}


def test_non_decrease_keeps_a_tie_and_strict_does_not():
    before = after = scores(1, 0, 1)
    assert decide("non_decrease", 2 / 3, 2 / 3, before, after).accepted
    tie = decide("strict", 2 / 3, 2 / 3, before, after)
    assert not tie.accepted and tie.reason == "validation 0.667 -> 0.667: did not improve"


def test_a_drop_is_rejected_with_the_scores_in_the_reason():
    decision = decide("non_decrease", 0.5, 0.25, scores(1, 0), scores(0, 0))
    assert (decision.accepted, decision.reason) == (False, "validation 0.500 -> 0.250: dropped")


def test_paired_needs_a_significant_number_of_examples_fixed():
    before = scores(*[0] * 10)
    few = decide("paired", 0.0, 0.2, before, scores(1, 1, *[0] * 8), alpha=0.1)
    many = decide("paired", 0.0, 0.5, before, scores(*[1] * 5, *[0] * 5), alpha=0.1)
    assert not few.accepted and "2 examples better, 0 worse" in few.reason
    assert many.accepted and "p=0.031" in many.reason


@pytest.mark.parametrize("wins, losses, p", [(0, 0, 1.0), (3, 0, 0.125), (5, 0, 0.03125),
                                             (4, 1, 0.1875)])
def test_sign_test_is_the_exact_one_sided_binomial_tail(wins, losses, p):
    assert sign_test_p(wins, losses) == pytest.approx(p)
