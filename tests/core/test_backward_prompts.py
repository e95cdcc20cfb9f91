"""The exact feedback prompts backward sends, for each shape of graph."""

from __future__ import annotations

import textprop as tp
from textprop.engines.scripted import ScriptedEngine

from .prompts_helpers import BACKWARD_SYSTEM, feedback_engine


def one_call(engine: ScriptedEngine):
    system_prompt = tp.Variable("You are a careful solver.", role_description="system prompt")
    question = tp.Variable("What is 2+2?", role_description="question", requires_grad=False)
    answer = tp.BlackboxLLM(engine, system_prompt)(question)
    loss = tp.TextLoss("Is the answer correct?", engine)(answer)
    return system_prompt, answer, loss


def test_one_llm_call_sends_forward_loss_then_feedback_for_answer_and_system_prompt():
    engine = feedback_engine()
    system_prompt, answer, loss = one_call(engine)

    loss.backward(engine)

    assert [r.role for r in engine.requests] == ["forward", "loss", "backward", "backward"]
    forward, judge, on_answer, on_prompt = engine.requests
    assert (forward.system_prompt, forward.prompt) == ("You are a careful solver.",
                                                       "What is 2+2?")
    assert (judge.system_prompt, judge.prompt) == ("Is the answer correct?", "The answer is 5.")
    assert on_answer.system_prompt == BACKWARD_SYSTEM
    assert on_answer.prompt == """\
You will give feedback to a variable with the following role: <ROLE> response from the \
language model </ROLE>. Here is an evaluation of the variable:

<LM_SYSTEM_PROMPT> Is the answer correct? </LM_SYSTEM_PROMPT>

<LM_INPUT> The answer is 5. </LM_INPUT>

<LM_OUTPUT> Wrong: the correct answer is 4. </LM_OUTPUT>

<OBJECTIVE_FUNCTION>Your goal is to give feedback and criticism to the variable given the \
above evaluation output. Our only goal is to improve the above metric, and nothing \
else.</OBJECTIVE_FUNCTION>

We are interested in giving feedback to the response from the language model for this step. \
Specifically, give feedback to the following span of text:

<VARIABLE> The answer is 5. </VARIABLE>

Given the above, describe how the response from the language model could be improved to \
improve the <OBJECTIVE_FUNCTION>. Be specific and concise: at most 4 sentences.

Reply with the feedback only."""
    assert on_prompt.prompt == """\
You will give feedback to a variable with the following role: <ROLE> system prompt </ROLE>. \
Here is a step of a larger system that used the variable:

<LM_SYSTEM_PROMPT> You are a careful solver. </LM_SYSTEM_PROMPT>

<LM_INPUT> What is 2+2? </LM_INPUT>

<LM_OUTPUT> The answer is 5. </LM_OUTPUT>

The output of this step was later used as: response from the language model.

<OBJECTIVE_FUNCTION>Your goal is to give feedback to the variable that addresses the \
following feedback on the output of this step: Make the response from the language model \
more precise.</OBJECTIVE_FUNCTION>

We are interested in giving feedback to the system prompt for this step. Specifically, give \
feedback to the following span of text:

<VARIABLE> You are a careful solver. </VARIABLE>

Given the above, describe how the system prompt could be improved to improve the \
<OBJECTIVE_FUNCTION>. Be specific and concise: at most 4 sentences.

Reply with the feedback only."""
    assert [g.value for g in answer.gradients] == [
        "Make the response from the language model more precise."]
    assert [g.value for g in system_prompt.gradients] == ["Make the system prompt more precise."]
    assert on_answer.max_tokens == 300 and on_answer.json_schema is None


def test_structured_engines_are_asked_for_json_feedback_and_the_field_is_read():
    engine = ScriptedEngine(supports_json_schema=True)
    engine.on(lambda r: r.role == "backward", {"feedback": "Say the number only."})
    engine.on(lambda r: r.role in ("forward", "loss"), "5")
    system_prompt, _, loss = one_call(engine)

    loss.backward(engine)

    request = engine.requests[-1]
    assert request.prompt.endswith(
        'Reply with a JSON object of the form {"feedback": "<your feedback>"}.')
    assert request.json_schema == {
        "type": "object", "required": ["feedback"],
        # the grammar closes the string before max_tokens=300 could cut the JSON
        "properties": {"feedback": {"type": "string", "maxLength": 852}}}
    assert system_prompt.get_gradient_text() == "Say the number only."


def test_a_feedback_reply_cut_off_mid_json_keeps_what_was_said():
    from textprop.errors import EngineReplyError

    engine = ScriptedEngine(supports_json_schema=True)
    engine.on(lambda r: r.role == "backward", EngineReplyError(
        "not valid JSON", reply_text='{"feedback": "Say the \\"number\\" only, and',
        finish_reason="length"))
    engine.on(lambda r: r.role in ("forward", "loss"), "5")
    system_prompt, answer, loss = one_call(engine)

    loss.backward(engine)

    assert answer.get_gradient_text() == 'Say the "number" only, and'


def test_three_step_chain_feeds_the_first_system_prompt_through_the_middle_step():
    engine = feedback_engine()
    planner = tp.Variable("Plan the solution.", role_description="planner prompt")
    question = tp.Variable("What is 2+2?", role_description="question", requires_grad=False)
    fixed = {"requires_grad": False}
    plan = tp.LLMCall(engine, planner)(question, "plan")
    draft = tp.LLMCall(engine, tp.Variable("Follow the plan.", role_description="solver prompt",
                                           **fixed))(plan, "draft answer")
    final = tp.LLMCall(engine, tp.Variable("Polish.", role_description="editor prompt",
                                           **fixed))(draft, "final answer")
    loss = tp.TextLoss("Is the final answer correct?", engine)(final)

    loss.backward(engine)

    feedback = [r.prompt for r in engine.requests if r.role == "backward"]
    targets = [p.split("<ROLE> ")[1].split(" </ROLE>")[0] for p in feedback]
    assert targets == ["final answer", "draft answer", "plan", "planner prompt"]
    assert "following feedback on the output of this step: Make the draft answer more precise." \
        in feedback[2]
    assert feedback[3] == """\
You will give feedback to a variable with the following role: <ROLE> planner prompt </ROLE>. \
Here is a step of a larger system that used the variable:

<LM_SYSTEM_PROMPT> Plan the solution. </LM_SYSTEM_PROMPT>

<LM_INPUT> What is 2+2? </LM_INPUT>

<LM_OUTPUT> The answer is 5. </LM_OUTPUT>

The output of this step was later used as: plan.

<OBJECTIVE_FUNCTION>Your goal is to give feedback to the variable that addresses the \
following feedback on the output of this step: Make the plan more precise.\
</OBJECTIVE_FUNCTION>

We are interested in giving feedback to the planner prompt for this step. Specifically, give \
feedback to the following span of text:

<VARIABLE> Plan the solution. </VARIABLE>

Given the above, describe how the planner prompt could be improved to improve the \
<OBJECTIVE_FUNCTION>. Be specific and concise: at most 4 sentences.

Reply with the feedback only."""
    assert planner.get_gradient_text() == "Make the planner prompt more precise."


def test_a_variable_feeding_two_steps_gets_one_gradient_from_each_with_its_own_context():
    engine = feedback_engine()
    draft = tp.Variable("Paris is the capital of Germany.", role_description="draft sentence")
    fixed = {"requires_grad": False}
    facts = tp.LLMCall(engine, tp.Variable("Check facts.", role_description="fact checker",
                                           **fixed))(draft, "fact check")
    style = tp.LLMCall(engine, tp.Variable("Check style.", role_description="style checker",
                                           **fixed))(draft, "style check")
    loss = tp.TextLoss("Are both checks passed?", engine)(tp.sum([facts, style]))

    loss.backward(engine)

    gradients = list(draft.gradients)
    assert [g.value for g in gradients] == ["Make the draft sentence more precise."] * 2
    assert [g.context.output_role for g in gradients] == ["fact check", "style check"]
    assert gradients[0].context.conversation == (
        "<LM_SYSTEM_PROMPT> Check facts. </LM_SYSTEM_PROMPT>\n\n"
        "<LM_INPUT> Paris is the capital of Germany. </LM_INPUT>\n\n"
        "<LM_OUTPUT> The answer is 5. </LM_OUTPUT>")
    assert "<LM_SYSTEM_PROMPT> Check style. </LM_SYSTEM_PROMPT>" in (
        gradients[1].context.conversation)


def test_sum_hands_the_combined_feedback_to_every_input_exactly_once():
    engine = feedback_engine()
    a = tp.Variable("Line1", role_description="role1")
    b = tp.Variable("Line2", role_description="role2")
    total = tp.sum([a, b])
    loss = tp.TextLoss("Judge both lines.", engine)(total)

    loss.backward(engine)

    assert total.role_description == "a combination of the following: role1, role2"
    combined = "Make the a combination of the following: role1, role2 more precise."
    for variable, role in ((a, "role1"), (b, "role2")):
        assert len(variable.gradients) == 1
        assert variable.get_gradient_text() == (
            "Here is the feedback on the combination (a combination of the following: role1, "
            f"role2) that this {role} is part of: {combined}")
    # no LLM call for the sum itself: one for the total, none for the lines
    assert [r.role for r in engine.requests] == ["loss", "backward"]


def batch(engine: ScriptedEngine, combine):
    system_prompt = tp.Variable("Count the objects.", role_description="system prompt")
    model = tp.BlackboxLLM(engine, system_prompt)
    losses = []
    for text in ("I have a cat and two dogs.", "I have a pen.", "I have three apples."):
        question = tp.Variable(text, role_description="question", requires_grad=False)
        losses.append(tp.TextLoss("Is the count correct?", engine)(model(question)))
    return system_prompt, combine(losses)


def test_a_batch_summed_gives_the_shared_prompt_one_gradient_per_example():
    engine = feedback_engine()
    system_prompt, total = batch(engine, tp.sum)

    total.backward(engine)

    assert [r.role for r in engine.requests].count("backward") == 6
    assert [g.value for g in system_prompt.gradients] == [
        "Make the system prompt more precise."] * 3
    assert [g.context.conversation.split("<LM_INPUT> ")[1].split(" </LM_INPUT>")[0]
            for g in system_prompt.gradients] == [
        "I have a cat and two dogs.", "I have a pen.", "I have three apples."]


def test_a_batch_reduced_condenses_the_shared_prompts_feedback_with_one_call():
    engine = feedback_engine()
    system_prompt, total = batch(engine, tp.reduce)

    total.backward(engine)

    roles = [r.role for r in engine.requests]
    assert roles.count("backward") == 7  # 3 answers + 3 prompt edges + 1 condensation
    condense = engine.requests[-1]
    assert condense.system_prompt.startswith("You are part of an optimization system that "
                                             "improves a given text (the variable). Your only "
                                             "job is to condense several pieces of feedback")
    assert condense.prompt == """\
Here is the feedback we got for the variable with the role <ROLE> system prompt </ROLE> from \
3 examples of a batch:

<FEEDBACK> Make the system prompt more precise. </FEEDBACK>
<FEEDBACK> Make the system prompt more precise. </FEEDBACK>
<FEEDBACK> Make the system prompt more precise. </FEEDBACK>

Condense it into one feedback for the system prompt, in at most 4 sentences.

Reply with the feedback only."""
    assert [g.value for g in system_prompt.gradients] == ["Condensed feedback."]
    # every answer (one per example) still got its own feedback
    answers = [p for p in total.predecessors]
    assert all(len(loss.predecessors[1].gradients) == 1 for loss in answers)


def test_a_python_function_in_the_chain_passes_feedback_on_to_its_input():
    engine = feedback_engine()
    system_prompt = tp.Variable("Solve it.", role_description="system prompt")
    question = tp.Variable("What is 2+2?", role_description="question", requires_grad=False)
    answer = tp.BlackboxLLM(engine, system_prompt)(question)
    last_word = tp.StringBasedFunction(lambda text: text.value.split()[-1].strip("."),
                                       "extract the final number of the answer")
    number = last_word({"text": answer}, "extracted number")
    loss = tp.TextLoss("Is the number 4?", engine)(number)

    loss.backward(engine)

    feedback = [r.prompt for r in engine.requests if r.role == "backward"]
    assert number.value == "5"
    assert feedback[1] == """\
You will give feedback to a variable with the following role: <ROLE> response from the \
language model </ROLE>. Here is a step of a larger system that used the variable:

Function purpose: extract the final number of the answer

<INPUTS_TO_FUNCTION> **text** (role: response from the language model): The answer is 5. \
</INPUTS_TO_FUNCTION>

<OUTPUT_OF_FUNCTION> 5 </OUTPUT_OF_FUNCTION>

The output of this step was later used as: extracted number.

<OBJECTIVE_FUNCTION>Your goal is to give feedback to the variable that addresses the \
following feedback on the output of this step: Make the extracted number more precise.\
</OBJECTIVE_FUNCTION>

We are interested in giving feedback to the response from the language model for this step. \
Specifically, give feedback to the following span of text:

<VARIABLE> The answer is 5. </VARIABLE>

Given the above, describe how the response from the language model could be improved to \
improve the <OBJECTIVE_FUNCTION>. Be specific and concise: at most 4 sentences.

Reply with the feedback only."""
    assert system_prompt.get_gradient_text() == "Make the system prompt more precise."


def test_a_metric_loss_turns_its_explanation_into_feedback_without_an_llm_call():
    engine = feedback_engine()
    system_prompt = tp.Variable("Solve it.", role_description="system prompt")
    question = tp.Variable("What is 2+2?", role_description="question", requires_grad=False)
    answer = tp.BlackboxLLM(engine, system_prompt)(question)

    def exact(prediction: str, target: str):
        got = prediction.split()[-1].strip(".")
        return (1.0, f"correct: {got}") if got == target else (0.0,
                                                              f"expected {target}, got {got}")

    loss = tp.MetricLoss(exact)(answer, "4")
    loss.backward(engine)

    assert loss.value == "expected 4, got 5" and loss.score == 0.0
    assert answer.get_gradient_text() == "expected 4, got 5"
    assert answer.gradients.__iter__().__next__().context.conversation == (
        "<METRIC> exact </METRIC>\n\n<PREDICTION> The answer is 5. </PREDICTION>\n\n"
        "<SCORE> 0 </SCORE>\n\n<EXPLANATION> expected 4, got 5 </EXPLANATION>")
    assert [r.role for r in engine.requests] == ["forward", "backward"]


def test_a_passing_metric_sends_no_feedback():
    engine = feedback_engine()
    answer = tp.Variable("4", role_description="answer")
    loss = tp.MetricLoss(lambda p, t: (float(p == t), "ok"))(answer, "4")
    loss.backward(engine)
    assert len(answer.gradients) == 0 and engine.requests == []
