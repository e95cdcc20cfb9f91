"""Metrics score in [0, 1] and explain the score in words the feedback engine can use."""

from __future__ import annotations

import asyncio
import sys
import textwrap

import pytest

from textprop.data import Example
from textprop.engines.scripted import ScriptedEngine
from textprop.errors import ConfigError, EngineReplyError
from textprop.metrics import (
    JUDGE_SCHEMA,
    Contains,
    ExactMatch,
    LLMJudge,
    Metric,
    MetricResult,
    NumericMatch,
    contains,
    exact_match,
    find_numbers,
    get_metric,
    load_metric,
    marked_answer,
    numeric_match,
    parse_number,
)

EXAMPLE = Example(id="e1", input="How many legs do 2 cats have?", target="8",
                  source="data/train.jsonl:3")


def result(score: float, explanation: str) -> MetricResult:
    return MetricResult(score, explanation)


# --- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "numbers"), [
    ("7", [7]),
    ("-5 and −3", [-5, -3]),
    ("3.25 or .5 or -.5", [3.25, 0.5, -0.5]),
    ("1,000", [1000]),
    ("1,234,567.89", [1234567.89]),
    ("1,2", [1, 2]),  # a comma before fewer than three digits separates numbers
    ("3, 4", [3, 4]),
    ("12,34", [12, 34]),
    ("100,200", [100200]),  # documented: three-digit groups read as thousands
    ("$1,234.50", [1234.5]),
    ("-$5 and US$7", [-5, 7]),
    ("50%", [50]),
    ("10-20", [10, 20]),  # a range, not a negative number
    ("5 - 3 = 2", [5, 3, 2]),
    ("x2 v1.2 but 5th", [5]),  # digits glued to letters are not numbers
    ("It costs 3. Then 4.", [3, 4]),  # a sentence's period is not a decimal point
    ("seven", []),
])
def test_find_numbers(text, numbers):
    assert find_numbers(text) == numbers


@pytest.mark.parametrize(("text", "answer"), [
    ("3 cats have 12 legs, so 12", 12),  # no marker: the last number
    ("Answer: 7\nCheck: 3 + 4 = 7, and 9 is wrong", 7),  # the marked answer wins
    ("The answer is -4.", -4),
    ("answer is: $1,234.50 in total", 1234.5),
    ("First 3. Answer: 5. Wait, recount. Answer: 6 apples and 2 pears", 6),  # last marker
    ("so it is #### 1,080", 1080),
    ("Thus $\\boxed{42}$. Note 3 steps.", 42),
    ("**Answer:** **9**", 9),
    ("Answer:\n\n  11", 11),
    ("Answer: seven (3 + 4)", 3),  # the first number after the marker
    ("Answer: seven", None),
    ("I counted 3 and 4. Answer: none", 4),  # a marked answer without a number: the last one
    ("", None),
])
def test_parse_number_picks_the_final_answer(text, answer):
    assert parse_number(text) == answer


@pytest.mark.parametrize(("text", "answer"), [
    ("Answer: a b c.", "a b c"),
    ("answer IS (B)", "(B)"),
    ("The final answer: `apple pear`", "apple pear"),
    ("no marker here", None),
])
def test_marked_answer(text, answer):
    assert marked_answer(text) == answer


def test_numeric_match_explains_what_was_expected_and_found():
    assert numeric_match("Answer: 8", "8") == result(1.0, "correct: 8")
    assert numeric_match("2 cats, 4 legs each: 10", "8") == result(
        0.0, "expected 8, got 10 (the last number in the reply, which marks no final answer "
             "such as 'Answer: ...')")
    assert numeric_match("2 cats, 4 legs each.\nAnswer: 10", "8") == result(
        0.0, "expected 8, got 10 (read from the reply's marked final answer: the answer was "
             "found, and it is wrong)")
    assert numeric_match("eight", "8") == result(
        0.0, "expected 8, but the prediction contains no number")
    assert numeric_match("Answer: 1,000.0", "1000") == result(1.0, "correct: 1000")
    assert numeric_match("Answer: 2.50", "$2.5") == result(1.0, "correct: 2.5")
    assert numeric_match("Answer: 7.5", "7").explanation.startswith("expected 7, got 7.5 (")


def test_numeric_match_tolerance():
    assert numeric_match("3.14", "3.14159", tolerance=0.01).score == 1.0
    assert numeric_match("3.14", "3.14159").score == 0.0


def test_a_target_without_a_number_is_a_data_error_naming_the_example():
    with pytest.raises(ConfigError) as caught:
        NumericMatch().score("7", Example(id="x", input="q", target="many",
                                          source="data/train.jsonl:12"))
    assert str(caught.value) == ("data/train.jsonl:12, field 'target': the target 'many' "
                                 "holds no number for the numeric metric")


# --- text ------------------------------------------------------------------------------------


def test_exact_match_compares_the_final_answer_with_whitespace_normalized():
    assert exact_match("Let me sort.\nAnswer:  apple   pear", "apple pear") == result(
        1.0, "correct: 'apple pear'")
    assert exact_match("pear apple", "apple pear") == result(
        0.0, "expected 'apple pear', got 'pear apple' (the reply marks no final answer such as "
             "'Answer: ...', so the whole reply was compared)")
    assert exact_match("Let me sort.\nAnswer: pear apple", "apple pear") == result(
        0.0, "expected 'apple pear', got 'pear apple' (read from the reply's marked final "
             "answer: the answer was found, and it is wrong)")
    assert exact_match(" apple\npear ", "apple pear").score == 1.0


def test_exact_match_options():
    assert exact_match("Apple", "apple").score == 0.0
    assert exact_match("Apple", "apple", ignore_case=True).score == 1.0
    assert exact_match("a  b", "a b", normalize_whitespace=False).explanation.startswith(
        "expected 'a b', got 'a  b' (")
    assert exact_match("Answer: x", "x", extract_answer=False) == result(
        0.0, "expected 'x', got 'Answer: x'")


def test_long_predictions_are_shortened_in_explanations():
    prediction = "reasoning " * 40 + "so: pear"
    explanation = exact_match(prediction, "apple").explanation
    assert explanation.startswith(
        f"expected 'apple', got {prediction[:60] + ' ... ' + prediction[-100:]!r} (")


def test_contains():
    assert contains("The capital is PARIS.", "Paris") == result(1.0, "correct: contains 'Paris'")
    assert contains("London", "Paris") == result(
        0.0, "expected 'Paris' in the answer, got 'London'")
    assert contains("I have 17", "7").score == 1.0
    assert contains("I have 17", "7", whole_word=True).score == 0.0
    assert contains("I have 7.", "7", whole_word=True).score == 1.0
    assert contains("paris", "Paris", ignore_case=False).score == 0.0


def test_metric_objects_take_an_example_or_a_bare_target():
    assert ExactMatch(ignore_case=True).score("Answer: A", "a").score == 1.0
    assert Contains().score("it is 8", EXAMPLE).score == 1.0
    assert NumericMatch().score("8 legs", EXAMPLE) == result(1.0, "correct: 8")
    assert asyncio.run(NumericMatch().ascore("Answer: 9", EXAMPLE)) == result(
        0.0, "expected 8, got 9 (read from the reply's marked final answer: the answer was found, "
             "and it is wrong)")


@pytest.mark.parametrize("score", [-0.1, 1.5, float("nan")])
def test_scores_outside_zero_to_one_are_refused(score):
    with pytest.raises(ValueError, match="score must lie in"):
        MetricResult(score, "x")


# --- your own scorer -------------------------------------------------------------------------


USER_MODULE = '''
from textprop.metrics import Metric, MetricResult

def as_bool(prediction, target):
    return prediction.strip() == target

def as_float(prediction, target):
    return 0.5

def as_pair(prediction, target):
    return 0.0, f"too long by {len(prediction) - len(target)} characters"

def as_result(prediction, target):
    return MetricResult(1.0, "fine")

def with_example(prediction, target, example):
    return 1.0, f"{example.id}: {example.input}"

async def as_async(prediction, target):
    return prediction == target

def too_high(prediction, target):
    return 3

def nothing(prediction, target):
    return None

class Length(Metric):
    name = "length"
    def score(self, prediction, example):
        return MetricResult(1.0 if len(prediction) < 5 else 0.0, "length")

LENGTH = Length()
NOT_CALLABLE = 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_scores.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "my_scores.py"
    for name in ("my_scores", "here_scores", "broken_scores"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(("function", "prediction", "expected"), [
    ("as_bool", "8", result(1.0, "correct: '8'")),
    ("as_bool", "9", result(0.0, "expected '8', got '9'")),
    ("as_float", "9", result(0.5, "partly correct (score 0.5): expected '8', got '9'")),
    ("as_pair", "8 legs", result(0.0, "too long by 5 characters")),
    ("as_result", "9", result(1.0, "fine")),
    ("with_example", "9", result(1.0, "e1: How many legs do 2 cats have?")),
    ("as_async", "8", result(1.0, "correct: '8'")),
])
def test_a_python_scorer_may_return_any_simple_form(user_module, function, prediction,
                                                    expected):
    metric = load_metric(f"my_scores:{function}")
    assert metric.name == f"my_scores:{function}"
    assert metric.score(prediction, EXAMPLE) == expected
    assert asyncio.run(metric.ascore(prediction, EXAMPLE)) == expected


def test_metric_objects_and_classes_load_as_they_are(user_module):
    assert load_metric("my_scores:LENGTH").name == "length"
    assert load_metric("my_scores:Length").score("abc", "x").score == 1.0


def test_a_scorer_file_by_path_and_a_module_in_the_current_directory(user_module, tmp_path,
                                                                     monkeypatch):
    (tmp_path / "here_scores.py").write_text(textwrap.dedent(USER_MODULE))
    assert load_metric(f"{tmp_path / 'here_scores.py'}:as_bool").score("8", "8").score == 1.0
    monkeypatch.chdir(tmp_path)
    assert load_metric("here_scores:as_bool").score("8", "8").score == 1.0


@pytest.mark.parametrize(("spec", "message"), [
    ("my_scores:too_high",
     "metric 'my_scores:too_high' returned score 3; scores must lie in [0, 1]"),
    ("my_scores:nothing",
     "metric 'my_scores:nothing' returned None; return a bool, a number in [0, 1], "
     "a (score, explanation) pair or a MetricResult"),
])
def test_a_scorer_returning_something_unusable(user_module, spec, message):
    with pytest.raises(ConfigError) as caught:
        load_metric(spec).score("8", EXAMPLE)
    assert str(caught.value) == message


def test_loading_errors_say_what_was_looked_for(user_module, tmp_path):
    (tmp_path / "broken_scores.py").write_text("import not_a_real_package_xyz\n")
    cases = {
        "no_such_module_xyz:f": "metric 'no_such_module_xyz:f': cannot import module "
                                "'no_such_module_xyz' (not installed, and not found in the "
                                "current directory)",
        "my_scores:missing": "metric 'my_scores:missing': module 'my_scores' has no "
                             "'missing' (it defines: as_bool, as_float, as_pair, as_result, "
                             "with_example, as_async, too_high, nothing, Length)",
        "my_scores:NOT_CALLABLE": "metric 'my_scores:NOT_CALLABLE': 'NOT_CALLABLE' is a int, "
                                  "not a function",
        "broken_scores:f": "metric 'broken_scores:f': importing 'broken_scores' failed: "
                           "ModuleNotFoundError: No module named 'not_a_real_package_xyz'",
        "nocolon": "metric 'nocolon' is not of the form 'module:function'",
        "/no/such/file.py:f": "metric '/no/such/file.py:f': no such file '/no/such/file.py'",
    }
    for spec, message in cases.items():
        with pytest.raises(ConfigError) as caught:
            load_metric(spec)
        assert str(caught.value) == message


def test_get_metric_resolves_names_specs_metrics_and_functions(user_module):
    assert isinstance(get_metric("exact_match"), ExactMatch)
    assert isinstance(get_metric("numeric"), NumericMatch)
    assert isinstance(get_metric("contains"), Contains)
    assert get_metric("my_scores:as_bool").score("8", EXAMPLE).score == 1.0
    metric = NumericMatch()
    assert get_metric(metric) is metric
    assert get_metric(lambda p, t: p == t).score("8", EXAMPLE) == result(1.0, "correct: '8'")
    with pytest.raises(ConfigError) as caught:
        get_metric("f1")
    assert str(caught.value) == ("unknown metric 'f1'; use one of exact_match, numeric, "
                                 "numeric_match, contains, or 'module:function' for your own")


# --- LLM judge -------------------------------------------------------------------------------

QUESTION = Example(id="q1", input="What is the capital of France?", target="Paris")
JUDGE_PROMPT = """\
<CRITERIA> The answer must be one short sentence. </CRITERIA>

<QUESTION> What is the capital of France? </QUESTION>

<REFERENCE_ANSWER> Paris </REFERENCE_ANSWER>

<PREDICTION> Paris, which is the capital and largest city. </PREDICTION>

Grade the prediction against the criteria. First explain in at most 2 sentences what is \
right or wrong in it, then give a score from 0 (fails the criteria) to 1 (fully meets them).
Reply with a JSON object of the form \
{"explanation": "<your explanation>", "score": <a number from 0 to 1>}."""


def judge(*replies, supports_json_schema: bool = True) -> tuple[LLMJudge, ScriptedEngine]:
    engine = ScriptedEngine(supports_json_schema=supports_json_schema).queue(*replies)
    return LLMJudge(engine, " The answer must be one short sentence. ", max_tokens=200,
                    max_sentences=2), engine


def test_the_judge_sends_one_structured_loss_request_and_returns_its_grade():
    metric, engine = judge({"explanation": " Correct but wordy. ", "score": 0.5})

    outcome = metric.score("Paris, which is the capital and largest city.", QUESTION)

    assert outcome == result(0.5, "Correct but wordy.")
    (request,) = engine.requests
    assert request.prompt == JUDGE_PROMPT
    assert request.system_prompt.startswith("You are the evaluator in an optimization system")
    assert (request.role, request.max_tokens, request.temperature) == ("loss", 200, 0.0)
    assert request.json_schema == JUDGE_SCHEMA
    assert list(JUDGE_SCHEMA["properties"]) == ["explanation", "score"]  # reason, then score


def test_the_judge_is_async_too():
    metric, engine = judge({"explanation": "Fine.", "score": 1})
    outcome = asyncio.run(metric.ascore("Paris, which is the capital and largest city.",
                                        QUESTION))
    assert outcome == result(1.0, "Fine.")
    assert engine.requests[0].prompt == JUDGE_PROMPT


def test_without_structured_output_the_judge_reads_json_from_the_text():
    metric, engine = judge('Sure!\n```json\n{"explanation": "Wrong city.", "score": "0"}\n```',
                           supports_json_schema=False)
    assert metric.score("Lyon", "Paris") == result(0.0, "Wrong city.")
    request = engine.requests[0]
    assert request.json_schema is None
    assert "<QUESTION>" not in request.prompt  # a bare target has no question
    assert "<REFERENCE_ANSWER> Paris </REFERENCE_ANSWER>\n\n<PREDICTION> Lyon" in request.prompt


def test_without_a_target_the_judge_grades_on_the_criteria_alone():
    metric, engine = judge({"explanation": "Short.", "score": 1})
    metric.score("Hi.", Example(id="p", input="Greet me", target=""))
    prompt = engine.requests[0].prompt
    assert "<REFERENCE_ANSWER>" not in prompt
    assert "<QUESTION> Greet me </QUESTION>\n\n<PREDICTION> Hi. </PREDICTION>" in prompt


@pytest.mark.parametrize("reply", [
    "I think it is good.",
    {"explanation": "Great.", "score": 8},
    {"explanation": "Great."},
    {"score": 1},
    {"explanation": "Great.", "score": True},
])
def test_an_unusable_judge_reply_is_an_engine_reply_error(reply):
    metric, _ = judge(reply)
    with pytest.raises(EngineReplyError, match="the judge did not reply with a JSON object"):
        metric.score("x", QUESTION)


def test_every_metric_is_a_metric():
    metric, _ = judge()
    for candidate in (metric, ExactMatch(), Contains(), NumericMatch(), get_metric("numeric")):
        assert isinstance(candidate, Metric)
