"""Textual gradient descent: the exact update prompts, memory, constraints, robust parsing."""

from __future__ import annotations

import pytest

import textprop as tp
from textprop.engines.scripted import ScriptedEngine
from textprop.variable import FeedbackContext, Gradient

from .prompts_helpers import OPTIMIZER_SYSTEM_TAGS

LONG_PROMPT = ("You are a meticulous assistant. Read the question twice, list every object "
               "with its count, add the counts step by step, and finish with the total as a "
               "single number on the last line.")


def prompt_with_feedback(text: str = LONG_PROMPT, *feedback: str) -> tp.Variable:
    variable = tp.Variable(text, role_description="system prompt")
    for f in feedback:
        variable.gradients.add(Gradient(f, role_description="feedback to system prompt"))
    return variable


def optimizer_engine(*replies: str) -> ScriptedEngine:
    return ScriptedEngine().queue(*replies)


def test_update_prompt_shows_full_value_and_each_gradient_in_its_context():
    variable = tp.Variable(LONG_PROMPT, role_description="system prompt")
    variable.gradients.add(Gradient(
        "Ask for the number only.", role_description="feedback to system prompt",
        context=FeedbackContext("<LM_INPUT> q </LM_INPUT>", "answer to the question",
                                "llm_call")))
    variable.gradients.add(Gradient("Mention units.", role_description="feedback"))
    engine = optimizer_engine("<IMPROVED_VARIABLE>Count, then answer.</IMPROVED_VARIABLE>")
    optimizer = tp.TGD([variable], engine=engine)

    [record] = optimizer.step()

    request = engine.requests[0]
    assert request.role == "optimizer" and request.system_prompt == OPTIMIZER_SYSTEM_TAGS
    assert request.prompt == f"""\
Here is the role of the variable you will improve: <ROLE>system prompt</ROLE>.

The variable is the text within the following span: <VARIABLE> {LONG_PROMPT} </VARIABLE>

Here is the context and feedback we got for the variable:

<CONTEXT>Here is a conversation:

<CONVERSATION><LM_INPUT> q </LM_INPUT></CONVERSATION>

This conversation is potentially part of a larger system. The output is used as answer to \
the question

Here is the feedback we got for system prompt in the conversation:

<FEEDBACK>Ask for the number only.</FEEDBACK>
<FEEDBACK>Mention units.</FEEDBACK></CONTEXT>

Improve the variable (system prompt) using the feedback provided in <FEEDBACK> tags.

Send the improved variable in the following format:

<IMPROVED_VARIABLE>{{the improved variable}}</IMPROVED_VARIABLE>

Send ONLY the improved variable between the <IMPROVED_VARIABLE> tags, and nothing else."""
    assert variable.value == "Count, then answer."
    assert (record.status, record.before, record.attempts) == ("updated", LONG_PROMPT, 1)


def test_constraints_and_in_context_examples_appear_in_that_order():
    variable = prompt_with_feedback("Be brief.", "Too vague.")
    engine = optimizer_engine("<IMPROVED_VARIABLE>Be brief and exact.</IMPROVED_VARIABLE>")
    optimizer = tp.TGD([variable], engine=engine,
                       constraints=["Keep it under 20 words.", "Do not use lists."],
                       in_context_examples=["Be exact: give one number."])

    optimizer.step()

    assert engine.requests[0].prompt.split("tags.\n\n", 1)[1] == """\
You must follow the following constraints:

<CONSTRAINTS>Constraint 1: Keep it under 20 words.
Constraint 2: Do not use lists.</CONSTRAINTS>

You must base on the following examples when modifying the system prompt:

<EXAMPLES>Be exact: give one number.</EXAMPLES>

Send the improved variable in the following format:

<IMPROVED_VARIABLE>{the improved variable}</IMPROVED_VARIABLE>

Send ONLY the improved variable between the <IMPROVED_VARIABLE> tags, and nothing else."""


def test_gradient_memory_shows_the_feedback_of_the_last_k_steps():
    variable = prompt_with_feedback("v0")
    engine = optimizer_engine(*(f"<IMPROVED_VARIABLE>v{i}</IMPROVED_VARIABLE>"
                                for i in range(1, 4)))
    optimizer = tp.TGD([variable], engine=engine, gradient_memory=2)

    for step in range(1, 4):
        optimizer.zero_grad()
        variable.gradients.add(Gradient(f"feedback {step}", role_description="feedback"))
        optimizer.step()

    first, second, third = (r.prompt for r in engine.requests)
    assert "PAST_FEEDBACK" not in first
    assert third.split("tags.\n\n", 1)[1].startswith("""\
Here is the feedback this variable received in the previous 2 optimization steps, oldest \
first. Feedback that keeps recurring means the earlier changes were not enough: make a more \
significant change.

<PAST_FEEDBACK>
<FEEDBACK-1> feedback 1 </FEEDBACK-1>
<FEEDBACK-2> feedback 2 </FEEDBACK-2>
</PAST_FEEDBACK>

Send the improved variable""")
    assert "<FEEDBACK-1> feedback 1 </FEEDBACK-1>\n</PAST_FEEDBACK>" in second
    assert variable.value == "v3"


def test_a_rewrite_that_fails_to_parse_twice_is_retried_with_the_problem_explained():
    variable = prompt_with_feedback("old", "Be exact.")
    engine = optimizer_engine("I would change it to be exact.", "Still no tags here.",
                              "<IMPROVED_VARIABLE>new</IMPROVED_VARIABLE>")
    optimizer = tp.TGD([variable], engine=engine)

    [record] = optimizer.step()

    assert (variable.value, record.status, record.attempts) == ("new", "updated", 3)
    retry = engine.requests[2]
    assert [m.role for m in retry.messages] == ["system", "user", "assistant", "user"]
    assert retry.messages[2].content == "Still no tags here."
    assert retry.messages[3].content == (
        'Your reply could not be used: it had neither a JSON object with "improved_variable" '
        "nor the text between <IMPROVED_VARIABLE> and </IMPROVED_VARIABLE>. Reply again with "
        "the complete improved variable, in exactly the format asked for.")
    assert retry.messages[1] == engine.requests[0].messages[1]


def test_a_rewrite_that_never_parses_keeps_the_old_value_and_says_why():
    variable = prompt_with_feedback("old", "Be exact.")
    engine = ScriptedEngine(default="no tags at all")
    optimizer = tp.TGD([variable], engine=engine, max_parse_retries=2)

    [record] = optimizer.step()

    assert variable.value == "old" and len(engine.requests) == 3
    assert record.status == "unparseable"
    assert record.reason.startswith("kept the old value: it had neither a JSON object")
    assert optimizer.history == [record]


PASTED = ("Count the objects. <LM_INPUT> I have a fish and two cats. </LM_INPUT> "
          "<LM_OUTPUT> Answer: 3 </LM_OUTPUT>")


def test_a_rewrite_that_carries_the_prompts_own_markup_is_asked_again_with_the_tags_named():
    variable = prompt_with_feedback("old", "Be exact.")
    engine = optimizer_engine(f"<IMPROVED_VARIABLE>{PASTED}</IMPROVED_VARIABLE>",
                              "<IMPROVED_VARIABLE>Count each object once.</IMPROVED_VARIABLE>")
    optimizer = tp.TGD([variable], engine=engine)

    [record] = optimizer.step()

    assert engine.requests[1].messages[3].content == (
        "Your reply could not be used: it carries </LM_INPUT>, </LM_OUTPUT>, <LM_INPUT>, "
        "<LM_OUTPUT>, markup of this prompt that is not part of the variable; the model that "
        "reads the variable would copy it into its answers. Reply again with the complete "
        "improved variable, in exactly the format asked for.")
    assert (variable.value, record.status, record.attempts) == (
        "Count each object once.", "updated", 2)


def test_a_writer_that_keeps_pasting_markup_leaves_the_value_and_tags_the_value_had_stay():
    variable = prompt_with_feedback("old", "Be exact.")
    optimizer = tp.TGD([variable], engine=ScriptedEngine(
        default=f"<IMPROVED_VARIABLE>{PASTED}</IMPROVED_VARIABLE>"))
    [record] = optimizer.step()
    assert (variable.value, record.status) == ("old", "unparseable")
    assert record.reason.startswith("kept the old value: it carries </LM_INPUT>")

    # tags the value already has are its own, and an unknown tag is no markup of textprop's
    own = prompt_with_feedback("Show each item as <EXAMPLE> item </EXAMPLE>.", "Be exact.")
    optimizer = tp.TGD([own], engine=optimizer_engine(
        "<IMPROVED_VARIABLE>List items as <EXAMPLE> item </EXAMPLE> in <ANSWER> tags."
        "</IMPROVED_VARIABLE>"))
    [record] = optimizer.step()
    assert record.status == "updated"
    assert own.value == "List items as <EXAMPLE> item </EXAMPLE> in <ANSWER> tags."


def test_a_reply_cut_off_at_the_token_limit_is_not_taken_as_the_new_value():
    from textprop.engines.base import Completion
    from textprop.optim.rewrite import parse_rewrite

    cut = Completion("<IMPROVED_VARIABLE>half a prom", finish_reason="length")
    forgot_closing_tag = Completion("<IMPROVED_VARIABLE>whole prompt", finish_reason="stop")
    tags = ("<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>")
    assert parse_rewrite(cut, tags).value is None
    assert parse_rewrite(forgot_closing_tag, tags).value == "whole prompt"


LOOP = ("Count every item. Add the counts. The output should be correct. "
        "Add the counts. The output should be correct. Add the co")


def cut_off(text: str):
    """A reply cut at max_tokens, raised as the OpenAI-compatible engine raises it."""
    from textprop.engines.base import Completion, with_parsed
    from textprop.engines.sdk import Secret, parse_json_reply

    def reply(request):
        return with_parsed(Completion(text, finish_reason="length"), lambda: parse_json_reply(
            text, request.json_schema, "length", "local", Secret("")))
    return reply


def test_a_reply_cut_off_in_a_loop_keeps_its_text_up_to_the_first_repeated_sentence():
    from textprop.engines.base import Completion
    from textprop.optim.rewrite import LOOP_NOTE, Parsed, parse_rewrite

    tags = ("<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>")
    as_json = Completion('{"improved_variable": "' + LOOP.replace("correct", "\\u0063orrect")
                         [:-1], finish_reason="length")
    as_tags = Completion("Here it is: <IMPROVED_VARIABLE>" + LOOP, finish_reason="length")
    for reply in (as_json, as_tags):
        parsed = parse_rewrite(reply, tags)
        assert (parsed.value, parsed.note) == (
            "Count every item. Add the counts. The output should be correct.", LOOP_NOTE)
    # cut after a whole value: the chatter that followed it is what ran to the limit
    after_json = Completion('{"improved_variable": "Count every item.", "note": "I chan',
                            finish_reason="length")
    after_tags = Completion("<IMPROVED_VARIABLE>Count every item.</IMPROVED_VARIABLE> I cha",
                            finish_reason="length")
    for reply in (after_json, after_tags):
        assert parse_rewrite(reply, tags) == Parsed("Count every item.")
    no_loop = Completion('{"improved_variable": "Count every item. Add the co',
                         finish_reason="length")
    assert parse_rewrite(no_loop, tags).value is None
    assert parse_rewrite(no_loop, tags).problem == (
        "the reply was cut off at the token limit; keep it shorter")


def test_a_rewrite_cut_off_in_a_loop_is_used_and_the_record_says_how_it_was_read():
    variable = prompt_with_feedback("Count every item.", "Say what to do with the counts.")
    engine = ScriptedEngine(supports_json_schema=True).queue(
        cut_off('{"improved_variable": "' + LOOP))
    optimizer = tp.TGD([variable], engine=engine)

    [record] = optimizer.step()

    assert len(engine.requests) == 1
    assert variable.value == "Count every item. Add the counts. The output should be correct."
    assert (record.status, record.reason) == (
        "updated", "the reply ran into a loop and was cut off; kept its text up to the first "
        "repeat")


def test_a_rewrite_cut_off_without_a_loop_is_asked_again_shorter():
    variable = prompt_with_feedback("Count every item.", "Say what to do with the counts.")
    engine = ScriptedEngine(supports_json_schema=True).queue(
        cut_off('{"improved_variable": "Count every item. Then add the co'),
        {"improved_variable": "Count every item, then add the counts."})
    optimizer = tp.TGD([variable], engine=engine)

    [record] = optimizer.step()

    assert (variable.value, record.attempts) == ("Count every item, then add the counts.", 2)
    assert engine.requests[1].messages[2].content == (
        '{"improved_variable": "Count every item. Then add the co')
    assert engine.requests[1].messages[3].content == (
        "Your reply could not be used: the reply was cut off at the token limit; keep it "
        "shorter. Reply again with the complete improved variable, in exactly the format "
        "asked for.")


def test_structured_engines_are_asked_for_json_and_the_field_becomes_the_value():
    variable = prompt_with_feedback("old", "Be exact.")
    engine = ScriptedEngine(supports_json_schema=True).queue({"improved_variable": "new"})
    optimizer = tp.TGD([variable], engine=engine)

    optimizer.step()

    request = engine.requests[0]
    assert request.json_schema["required"] == ["improved_variable"]
    assert request.prompt.endswith('Reply with a JSON object {"improved_variable": '
                                   '"<the improved variable>"} and nothing else.')
    assert request.system_prompt.endswith('You MUST reply with a JSON object '
                                          '{"improved_variable": "<the improved variable>"}; '
                                          "its value will directly replace the variable.")
    assert variable.value == "new"


def test_parameters_without_feedback_are_left_alone_without_a_call():
    variable = prompt_with_feedback("old")
    engine = ScriptedEngine()
    [record] = tp.TGD([variable], engine=engine).step()
    assert record.status == "no_feedback" and engine.requests == []


def test_state_dict_holds_memory_by_parameter_name_and_not_the_values():
    variable = prompt_with_feedback("v0", "fb")
    optimizer = tp.TGD({"system_prompt": variable}, engine=optimizer_engine(
        "<IMPROVED_VARIABLE>v1</IMPROVED_VARIABLE>"), gradient_memory=3)
    [record] = optimizer.step()
    state = optimizer.state_dict()

    fresh = tp.Variable("v0", role_description="system prompt")
    restored = tp.TGD({"system_prompt": fresh}, engine=ScriptedEngine(), gradient_memory=3)
    restored.load_state_dict(state)

    assert record.name == "system_prompt"
    assert state == {"state": {"system_prompt": {"memory": ["fb"]}}}
    assert fresh.value == "v0" and restored.state["system_prompt"]["memory"] == ["fb"]


def test_a_list_of_parameters_is_named_by_place_and_stays_a_list():
    a, b = prompt_with_feedback("a", "x"), prompt_with_feedback("b", "y")
    optimizer = tp.TGD([a, b], engine=ScriptedEngine())
    assert list(optimizer.named_parameters) == ["parameter_0", "parameter_1"]
    assert optimizer.parameters == [a, b]
    with pytest.raises(ValueError, match="does not have: other"):
        optimizer.load_state_dict({"state": {"other": {"memory": []}}})


def test_zero_grad_clears_every_parameters_feedback():
    a, b = prompt_with_feedback("a", "x"), prompt_with_feedback("b", "y")
    optimizer = tp.TGD([a, b], engine=ScriptedEngine())
    optimizer.zero_grad()
    assert len(a.gradients) == len(b.gradients) == 0


def test_parameters_that_cannot_receive_feedback_are_refused():
    frozen = tp.Variable("x", role_description="fixed text", requires_grad=False)
    with pytest.raises(ValueError, match="requires_grad=False"):
        tp.TGD([frozen], engine=ScriptedEngine())


def test_the_optimizer_sees_each_example_and_what_was_wrong_behind_a_condensed_feedback():
    from .prompts_helpers import feedback_engine

    engine = feedback_engine(optimizer="<IMPROVED_VARIABLE>Answer in ISO form."
                                       "</IMPROVED_VARIABLE>")
    system_prompt = tp.Variable("Rewrite dates.", role_description="system prompt")
    model = tp.BlackboxLLM(engine, system_prompt)
    losses = []
    for question, target in (("24.2.1990", "1990-02-24"), ("Mar 5 2001", "2001-03-05")):
        answer = model(tp.Variable(question, role_description="date", requires_grad=False))
        losses.append(tp.MetricLoss(lambda p, t: (0.0, f"expected {t!r}, got {p!r}"))(
            answer, target))
    tp.reduce(losses).backward(engine)
    tp.TGD([system_prompt], engine=engine).step()

    prompt = engine.requests[-1].prompt
    assert prompt.split("<CONTEXT>", 1)[1].split("</CONTEXT>")[0] == """\
Here is a conversation:

<CONVERSATION><LM_SYSTEM_PROMPT> Rewrite dates. </LM_SYSTEM_PROMPT>

<LM_INPUT> 24.2.1990 </LM_INPUT>

<LM_OUTPUT> The answer is 5. </LM_OUTPUT>

<LM_SYSTEM_PROMPT> Rewrite dates. </LM_SYSTEM_PROMPT>

<LM_INPUT> Mar 5 2001 </LM_INPUT>

<LM_OUTPUT> The answer is 5. </LM_OUTPUT></CONVERSATION>

What was wrong with the output, according to the evaluation downstream:

<OUTPUT_FEEDBACK>expected '1990-02-24', got 'The answer is 5.'
expected '2001-03-05', got 'The answer is 5.'</OUTPUT_FEEDBACK>

This conversation is potentially part of a larger system. The output is used as response \
from the language model

Here is the feedback we got for system prompt in the conversation:

<FEEDBACK>Condensed feedback.</FEEDBACK>"""
    assert system_prompt.value == "Answer in ISO form."


def test_a_rewrite_that_repeats_the_current_value_is_asked_for_again():
    variable = prompt_with_feedback("old", "Say which format.")
    engine = optimizer_engine("<IMPROVED_VARIABLE>old</IMPROVED_VARIABLE>",
                              "<IMPROVED_VARIABLE>new</IMPROVED_VARIABLE>")
    [record] = tp.TGD([variable], engine=engine).step()

    assert (record.status, record.attempts, variable.value) == ("updated", 2, "new")
    assert [r.temperature for r in engine.requests] == [0.0, 0.8]  # sampled, with the seed
    assert engine.requests[1].seed == 0
    assert engine.requests[1].messages[3].content == (
        "Your reply repeats the current variable word for word, but the feedback asks for a "
        "change. Reply again with an improved variable that makes a concrete change "
        "addressing the feedback, in exactly the format asked for.")


def test_a_rewrite_that_always_repeats_the_value_is_recorded_as_unchanged():
    variable = prompt_with_feedback("old", "Say which format.")
    engine = ScriptedEngine(default="<IMPROVED_VARIABLE>old</IMPROVED_VARIABLE>")
    [record] = tp.TGD([variable], engine=engine, max_parse_retries=1).step()
    assert (record.status, record.reason, len(engine.requests)) == (
        "unchanged", "the optimizer kept the text as it was", 2)
