"""Built-in tasks: deterministic per seed, disjoint splits, targets that are right."""

from __future__ import annotations

import re

import pytest

from textprop.data import BUILTIN_TASKS, builtin_task
from textprop.data.tasks import ITEMS, BuiltinTask, Generated
from textprop.errors import ConfigError
from textprop.metrics import get_metric

COUNTS = {"a": 1, "an": 1, "two": 2, "three": 3, "four": 4, "five": 5}
KIND_OF = {name: kind for kind, items in ITEMS.items() for pair in items for name in pair}
SINGULAR = {singular for items in ITEMS.values() for singular, _ in items}
PLURAL = {plural for items in ITEMS.values() for _, plural in items}


def contents(splits):
    return [[(e.id, e.input, e.target, dict(e.fields)) for e in split] for split in splits]


@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_the_same_seed_gives_the_same_examples_and_another_seed_others(name):
    first = builtin_task(name, n_train=5, n_val=5, n_test=5, seed=3)
    again = builtin_task(name, n_train=5, n_val=5, n_test=5, seed=3)
    other = builtin_task(name, n_train=5, n_val=5, n_test=5, seed=4)
    assert contents(first) == contents(again)
    assert [e.input for e in first.test] != [e.input for e in other.test]


@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_splits_have_the_requested_sizes_and_share_no_input_or_id(name):
    splits = builtin_task(name, n_train=40, n_val=30, n_test=30, seed=0)
    assert [len(s) for s in splits] == [40, 30, 30]
    inputs = [e.input for s in splits for e in s]
    assert len(set(inputs)) == 100
    assert len({e.id for s in splits for e in s}) == 100
    assert [s.name for s in splits] == [f"{name}-train", f"{name}-val", f"{name}-test"]


def test_the_test_split_does_not_depend_on_the_train_and_val_sizes():
    small = builtin_task("word_sorting", n_train=1, n_val=0, n_test=10, seed=0)
    large = builtin_task("word_sorting", n_train=50, n_val=20, n_test=10, seed=0)
    assert contents([small.test]) == contents([large.test])


def mentions_and_kind(question: str) -> tuple[list[str], str]:
    match = re.fullmatch(r"I have (.+)\. How many (.+) do I have\?", question)
    assert match, question
    listing, asked = match.groups()
    return re.split(r", (?:and )?", listing), asked


def recount(question: str) -> tuple[int, int, int]:
    """(total of the asked kind, mentions, distractor mentions), recomputed from the text."""
    mentions, asked = mentions_and_kind(question)
    total = distractors = 0
    for mention in mentions:
        count_word, item = mention.split(" ", 1)
        if KIND_OF[item] == asked:
            total += COUNTS[count_word]
        else:
            distractors += 1
    return total, len(mentions), distractors


def test_object_counting_targets_recount_correctly_with_distractors_and_multipliers():
    splits = builtin_task("object_counting", n_train=150, n_val=0, n_test=50, seed=1)
    examples = [e for s in splits for e in s]
    for example in examples:
        total, mentions, distractors = recount(example.input)
        assert example.target == str(total)
        assert 5 <= mentions <= 10 and distractors >= 1
        assert example.input.endswith(f"How many {example.fields['category']} do I have?")
    assert any(re.search(r"\b(two|three|four|five) ", e.input) for e in examples)
    assert {e.fields["category"] for e in examples} == {
        "musical instruments", "fruits", "vegetables", "animals"}


def test_object_counting_uses_a_and_an_and_plurals_correctly():
    splits = builtin_task("object_counting", n_train=200, n_val=0, n_test=0, seed=2)
    for example in splits.train:
        assert not re.search(r"\ba [aeiou]|\ban [^aeiou]", example.input), example.input
        for mention in mentions_and_kind(example.input)[0]:
            count_word, item = mention.split(" ", 1)
            assert item in (SINGULAR if COUNTS[count_word] == 1 else PLURAL), mention


def test_word_sorting_targets_are_the_listed_words_sorted():
    splits = builtin_task("word_sorting", n_train=1000, n_val=0, n_test=0, seed=0)
    prefix = "Sort the following words alphabetically: List: "
    for example in splits.train:
        assert example.input.startswith(prefix)
        words = example.input.removeprefix(prefix).split(" ")
        assert 4 <= len(words) <= 10 and len(set(words)) == len(words)
        assert words != sorted(words)
        assert example.target == " ".join(sorted(words))


@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_each_task_names_a_metric_that_scores_its_own_targets_as_correct(name):
    task = BUILTIN_TASKS[name]
    metric = get_metric(task.metric)
    for example in builtin_task(name, n_train=5, n_val=0, n_test=0).train:
        assert metric.score(f"Answer: {example.target}", example).score == 1.0


def test_generation_skips_repeated_inputs_and_gives_up_when_too_few_exist(monkeypatch):
    def five_inputs(rng):
        n = rng.randint(1, 5)
        return Generated(f"q{n}", str(n), {})

    monkeypatch.setitem(BUILTIN_TASKS, "tiny", BuiltinTask("tiny", "", five_inputs, "numeric"))
    splits = builtin_task("tiny", n_train=2, n_val=1, n_test=2)
    assert sorted(e.input for s in splits for e in s) == ["q1", "q2", "q3", "q4", "q5"]
    with pytest.raises(ConfigError, match="cannot generate 2 distinct tiny examples for the "
                                          "train split; ask for fewer"):
        builtin_task("tiny", n_train=2, n_val=2, n_test=2)


def test_unknown_tasks_and_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError) as caught:
        builtin_task("chess", n_train=1, n_val=1, n_test=1)
    assert str(caught.value) == ("unknown built-in task 'chess'; available: "
                                 "object_counting, word_sorting, date_normalization")
    with pytest.raises(ConfigError, match="n_val must be a non-negative integer, got -1"):
        builtin_task("word_sorting", n_train=1, n_val=-1, n_test=1)


def test_date_normalization_targets_are_the_iso_form_of_the_written_date():
    import re
    from datetime import datetime

    formats = ("%B %d, %Y", "%d %B %Y", "%b %d %Y", "%d.%m.%Y", "%Y/%m/%d")
    splits = builtin_task("date_normalization", n_train=40, n_val=0, n_test=0, seed=3)
    for example in splits.train:
        written = re.sub(r"^the (\d+)(st|nd|rd|th) of ", r"\1 ", example.fields["written"])
        written = written.replace(",", "") if written[0].isdigit() else written
        parsed = None
        for fmt in formats:
            try:
                parsed = datetime.strptime(written, fmt.replace(",", "") if written[0].isdigit()
                                           else fmt)
                break
            except ValueError:
                continue
        assert parsed is not None, written
        assert example.target == parsed.strftime("%Y-%m-%d")
        assert example.input == f"Write this date in the standard form: {example.fields['written']}"
