"""`Variable` and its ordered gradients."""

from __future__ import annotations

import pytest

import textprop as tp
from textprop.errors import GraphError
from textprop.variable import Gradient


def test_role_description_is_required_and_named_in_the_error():
    with pytest.raises(TypeError, match="role_description"):
        tp.Variable("Hello")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="role_description"):
        tp.Variable("Hello", role_description="  ")


def test_gradients_iterate_in_insertion_order_like_an_ordered_set():
    v = tp.Variable("x", role_description="text")
    grads = [Gradient(f"g{i}", role_description="feedback") for i in (3, 1, 2)]
    for g in grads + [grads[0]]:
        v.gradients.add(g)
    assert [g.value for g in v.gradients] == ["g3", "g1", "g2"]
    assert grads[1] in v.gradients and len(v.gradients) == 3
    assert v.get_gradient_text() == "g3\ng1\ng2"
    v.gradients = set()  # TextGrad code resets this way
    assert len(v.gradients) == 0


def test_predecessors_keep_call_order_without_duplicates():
    a, b = (tp.Variable(t, role_description=t) for t in "ab")
    v = tp.Variable("c", predecessors=[b, a, b], role_description="c")
    assert v.predecessors == [b, a]


def test_a_variable_without_grad_cannot_depend_on_one_with_grad():
    a = tp.Variable("a", role_description="a")
    with pytest.raises(GraphError):
        tp.Variable("b", predecessors=[a], requires_grad=False, role_description="b")


def test_numbers_become_text_and_other_types_are_refused():
    assert tp.Variable(42, role_description="n").value == "42"
    with pytest.raises(TypeError):
        tp.Variable(["a list"], role_description="list")
    with pytest.raises(GraphError, match="not an image"):  # bytes are read as an image
        tp.Variable(b"bytes", role_description="image")


def test_gradient_context_is_visible_in_textgrads_shape():
    from textprop.variable import FeedbackContext

    v = tp.Variable("x", role_description="draft")
    g = Gradient("fix it", role_description="feedback",
                 context=FeedbackContext("conv", "answer", "llm_call"))
    v.gradients.add(g)
    assert v.gradients_context[g] == {"context": "conv", "response_desc": "answer",
                                      "variable_desc": "draft"}


def test_adding_variables_concatenates_them_in_the_graph():
    a = tp.Variable("Line1", role_description="role1")
    b = tp.Variable("Line2", role_description="role2")
    total = a + b
    assert total.value == "Line1\nLine2" and total.predecessors == [a, b]
