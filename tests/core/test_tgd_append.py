"""TGD with `edit="append"`: the writer is asked for one new instruction, which is added at
the end of the current value. The exact prompts, the JSON and tag replies, and the retries
when the instruction is already there or was already tried."""

from __future__ import annotations

import asyncio

import pytest

import textprop as tp
from textprop.engines.scripted import ScriptedEngine
from textprop.prompts import render
from textprop.variable import Gradient

START = "Think step by step. End with 'Answer: N'."


def prompt_with_feedback(text: str = START, feedback: str = "It miscounts.") -> tp.Variable:
    variable = tp.Variable(text, role_description="system prompt")
    variable.gradients.add(Gradient(feedback, role_description="feedback to system prompt"))
    return variable


def test_the_writer_is_asked_for_one_instruction_and_it_is_added_on_a_new_line():
    variable = prompt_with_feedback()
    engine = ScriptedEngine(supports_json_schema=True).queue(
        {"new_instruction": "List each item with the number the question gives it."})
    optimizer = tp.TGD({"system_prompt": variable}, engine=engine, edit="append")

    [record] = optimizer.step()

    request = engine.requests[0]
    assert request.json_schema == {"type": "object",
                                   "properties": {"new_instruction": {"type": "string"}},
                                   "required": ["new_instruction"]}
    assert request.system_prompt == render("optimizer_system", reply_rule=(
        'You MUST reply with a JSON object {"new_instruction": "<one new instruction>"}; the '
        "instruction will be added at the end of the variable, whose current text stays as "
        "it is."))
    assert request.prompt == f"""\
Here is the role of the variable you will improve: <ROLE>system prompt</ROLE>.

The variable is the text within the following span: <VARIABLE> {START} </VARIABLE>

Here is the context and feedback we got for the variable:

<CONTEXT>{render("optimizer_feedback_plain", feedback="It miscounts.")}</CONTEXT>

Improve the variable (system prompt) using the feedback provided in <FEEDBACK> tags.

Write ONE new instruction (one or two sentences) to add at the end of the variable (system \
prompt) so that examples like these come out right. It must state a concrete method or rule \
that the variable does not state yet; do not restate what it already says. Write it as a \
direct instruction to the model that reads the variable, about how to do the task; do not \
describe the variable and do not copy the feedback's words.

Reply with a JSON object {{"new_instruction": "<the new instruction>"}} and nothing else."""
    assert variable.value == (f"{START}\nList each item with the number the question gives "
                              "it.")
    assert (record.status, record.before, record.after) == ("updated", START, variable.value)


def test_without_structured_output_the_instruction_comes_between_the_tags():
    variable = prompt_with_feedback()
    engine = ScriptedEngine().queue(
        "Sure. <IMPROVED_VARIABLE>Count the items one by one.</IMPROVED_VARIABLE>")
    optimizer = tp.TGD([variable], engine=engine, edit="append")

    optimizer.step()

    prompt = engine.requests[0].prompt
    assert prompt.endswith("Reply with the new instruction between <IMPROVED_VARIABLE> and "
                           "</IMPROVED_VARIABLE>.")
    assert engine.requests[0].json_schema is None
    assert variable.value == f"{START}\nCount the items one by one."


def test_an_instruction_the_value_already_states_is_asked_again_with_the_reason():
    variable = prompt_with_feedback()
    engine = ScriptedEngine(supports_json_schema=True).queue(
        {"new_instruction": "Think step by step."}, {"new_instruction": "Add the counts."})
    optimizer = tp.TGD([variable], engine=engine, edit="append")

    [record] = optimizer.step()

    retry = engine.requests[1]
    assert retry.messages[-1].content == render("optimizer_append_unchanged")
    assert retry.messages[-2].content == '{"new_instruction": "Think step by step."}'
    assert retry.temperature == 0.8
    assert (record.status, record.attempts) == ("updated", 2)
    assert variable.value == f"{START}\nAdd the counts."


def test_an_announced_and_quoted_instruction_is_read_without_its_wrapper():
    # B4's GSM8K writer wrapped the prompt's own format line so; unwrapped, it restates it
    variable = prompt_with_feedback()
    engine = ScriptedEngine(supports_json_schema=True).queue(
        {"new_instruction": "The new instruction to add at the end of the variable is: "
                            "'Think step by step. End with 'Answer: N'.'"},
        {"new_instruction": 'New instruction: "Add the counts one at a time."'})
    optimizer = tp.TGD([variable], engine=engine, edit="append")

    [record] = optimizer.step()

    assert engine.requests[1].messages[-1].content == render("optimizer_append_unchanged")
    assert (record.status, record.attempts) == ("updated", 2)
    assert variable.value == f"{START}\nAdd the counts one at a time."


@pytest.mark.parametrize("instruction, unwrapped_text", [
    ("The new instruction to add at the end of the variable is: 'Count twice.'",
     "Count twice."),
    ("Here is the new instruction: Count twice.", "Count twice."),
    ("Instruction to be added: `Count twice.`", "Count twice."),
    ("Count twice: once forward, once backward.", "Count twice: once forward, once backward."),
    ("Follow this instruction: count twice.", "Follow this instruction: count twice."),
    ("Add the counts: apples first.", "Add the counts: apples first."),
    ("New instruction: ''", "New instruction: ''"),
])
def test_only_a_preamble_that_announces_a_new_instruction_is_taken_off(instruction,
                                                                       unwrapped_text):
    from textprop.optim.tgd import unwrapped

    assert unwrapped(instruction) == unwrapped_text


CRITIQUE = ("The structured system prompt should be improved by adding a check to ensure "
            "that the output is a numerical value before proceeding with the addition.")


def test_an_instruction_that_copies_the_feedback_is_asked_again_in_the_writers_own_words():
    variable = prompt_with_feedback(feedback=CRITIQUE)
    engine = ScriptedEngine(supports_json_schema=True).queue(
        {"new_instruction": "Note: " + CRITIQUE},
        {"new_instruction": "Check that the final answer is a number before adding."})
    optimizer = tp.TGD([variable], engine=engine, edit="append")

    [record] = optimizer.step()

    retry = engine.requests[1]
    assert retry.messages[-1].content == render("optimizer_append_copied") == (
        "That instruction copies the feedback instead of instructing the model that reads "
        "the variable. Reply again with one short, direct instruction about how to do the "
        "task, in your own words and in exactly the format asked for.")
    assert retry.temperature == 0.8
    assert (record.status, record.attempts) == ("updated", 2)
    assert variable.value == f"{START}\nCheck that the final answer is a number before adding."


def test_a_writer_that_only_copies_the_feedback_leaves_the_value_and_says_so():
    variable = prompt_with_feedback(feedback=CRITIQUE)
    engine = ScriptedEngine(supports_json_schema=True).queue(
        *[{"new_instruction": CRITIQUE}] * 3)
    optimizer = tp.TGD([variable], engine=engine, edit="append")

    [record] = optimizer.step()

    assert len(engine.requests) == 3 and variable.value == START
    assert (record.status, record.reason) == ("copied", "every instruction copied the feedback")


@pytest.mark.parametrize("instruction, copied", [
    (CRITIQUE, True),
    # ten words of the critique in a row are a shared phrase, not a copy
    ("Always ensure that the output is a numerical value before proceeding with it.", False),
    ("Ensure that the output is a numerical value before proceeding with the addition.", True),
    ("Write each number you add on its own line.", False),
])
def test_a_copy_is_a_run_of_twelve_words_of_the_feedback(instruction, copied):
    from textprop.optim.tgd import copies

    assert copies(instruction, CRITIQUE) is copied


def test_tried_versions_are_shown_as_the_instructions_they_added_and_not_proposed_again():
    variable = prompt_with_feedback()
    tried = f"{START}\nCount twice."
    engine = ScriptedEngine(supports_json_schema=True).queue(
        {"new_instruction": "Count twice."}, {"new_instruction": "Name each item first."})
    optimizer = tp.TGD({"system_prompt": variable}, engine=engine, edit="append")

    record = asyncio.run(optimizer.arewrite("system_prompt", tried=[tried]))

    assert render("optimizer_tried_item", n=1, value="Count twice.") in \
        engine.requests[0].prompt
    assert engine.requests[1].messages[-1].content == render("optimizer_repeated")
    assert record.after == f"{START}\nName each item first." and record.status == "updated"


def test_an_instruction_that_rewords_a_tried_one_is_a_repeat_and_asked_again():
    variable = prompt_with_feedback()
    tried = f"{START}\nAlways provide the final answer directly, without any extra text."
    engine = ScriptedEngine(supports_json_schema=True).queue(
        {"new_instruction": "Additionally, always provide the final answer directly, "
                            "without extra text."},
        {"new_instruction": "Name each item first."})
    optimizer = tp.TGD({"system_prompt": variable}, engine=engine, edit="append")

    record = asyncio.run(optimizer.arewrite("system_prompt", tried=[tried]))

    assert engine.requests[1].messages[-1].content == render("optimizer_repeated")
    assert record.after == f"{START}\nName each item first." and record.attempts == 2


def test_rewrite_stays_the_default_and_an_unknown_edit_is_refused():
    assert tp.TGD([prompt_with_feedback()], engine=ScriptedEngine()).edit == "rewrite"
    with pytest.raises(ValueError, match="edit must be one of rewrite, append"):
        tp.TGD([prompt_with_feedback()], engine=ScriptedEngine(), edit="insert")


@pytest.mark.parametrize("instruction, restated", [
    ("The last line of your response should be of the format 'Answer: N'.", True),
    ("Think step by step.", True),
    ("Write each item with its count on its own line before adding.", False),
    ("The steps to count the animals should be clear and detailed.", False),
])
def test_an_instruction_made_of_words_the_prompt_already_has_adds_nothing(instruction,
                                                                          restated):
    from textprop.optim.tgd import restates

    text = ("You will answer a reasoning question. Think step by step. The last line of "
            "your response should be of the following format: 'Answer: N'.")
    assert restates(instruction, text) is restated


FAILURE = render("optimizer_failure_item", input="How many fruits? an apple, two plums",
                 output="Answer: 2", expected="3", explanation="expected '3', got '2'")


def test_with_failures_to_show_a_copy_is_asked_again_from_the_failures_alone():
    variable = prompt_with_feedback(feedback=CRITIQUE)
    engine = ScriptedEngine(supports_json_schema=True).queue(
        {"new_instruction": "Note: " + CRITIQUE},
        {"new_instruction": "Add up the number given with each item."})
    optimizer = tp.TGD({"system_prompt": variable}, engine=engine, edit="append")

    record = asyncio.run(optimizer.arewrite("system_prompt", failures=FAILURE))

    first, again = engine.requests
    assert "<CONTEXT>" in first.prompt and CRITIQUE in first.prompt
    assert len(again.messages) == 2  # a fresh request, not a turn of the first one
    assert again.system_prompt == first.system_prompt
    assert again.temperature == first.temperature == 0.0
    assert again.prompt == f"""\
Here is the role of the variable you will improve: <ROLE>system prompt</ROLE>.

The variable is the text within the following span: <VARIABLE> {START} </VARIABLE>

Improve the variable (system prompt) from the examples below.

{render("optimizer_failures", variable_role="system prompt", failures=FAILURE)}

{render("optimizer_append", variable_role="system prompt")}

{render("optimizer_append_reply_json")}"""
    assert (record.status, record.attempts) == ("updated", 2)
    assert record.reason == "asked again from the failures alone"
    assert record.after == f"{START}\nAdd up the number given with each item."


def test_asked_again_after_the_failures_alone_it_gets_a_fresh_sample_of_that_request():
    variable = prompt_with_feedback(feedback=CRITIQUE)
    engine = ScriptedEngine(supports_json_schema=True).queue(
        {"new_instruction": CRITIQUE}, {"new_instruction": "Think step by step."},
        {"new_instruction": CRITIQUE})
    optimizer = tp.TGD({"system_prompt": variable}, engine=engine, edit="append")

    record = asyncio.run(optimizer.arewrite("system_prompt", failures=FAILURE))

    first, failures_only, fresh = engine.requests
    assert CRITIQUE not in failures_only.prompt
    # the value's own words (unchanged), then a copy again: each time a new draw of the
    # failures-only request, never a turn that shows the writer its last reply
    assert fresh.messages == failures_only.messages
    assert (failures_only.temperature, failures_only.seed) == (0.0, 0)
    assert (fresh.temperature, fresh.seed) == (0.8, 2)
    assert (record.status, record.attempts, record.after) == ("copied", 3, START)


def test_with_failures_to_show_a_repeat_of_a_tried_version_is_asked_again_without_the_list():
    variable = prompt_with_feedback(feedback="It miscounts.")
    rejected = f"{START}\nCount each kind of item separately."
    engine = ScriptedEngine(supports_json_schema=True).queue(
        {"new_instruction": "Count each kind of item separately."},
        {"new_instruction": "Add the number written before each item."})
    optimizer = tp.TGD({"system_prompt": variable}, engine=engine, edit="append")

    record = asyncio.run(optimizer.arewrite("system_prompt", failures=FAILURE,
                                            tried=[rejected]))

    first, again = engine.requests
    assert "Count each kind of item separately." in first.prompt  # shown as tried
    assert "Count each kind of item separately." not in again.prompt
    assert "It miscounts." not in again.prompt
    assert (record.status, record.after) == (
        "updated", f"{START}\nAdd the number written before each item.")
