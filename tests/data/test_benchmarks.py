"""BBH and GSM8K load with TextGrad's exact splits.

The real files are read from $TEXTPROP_SHARED_DATA (default: `<repo>/../shared/data`), never
copied into the repository; tests needing them skip when they are absent. The split logic
itself is also checked on small generated files, which always run.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from textprop.data import load_bbh, load_gsm8k
from textprop.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("TEXTPROP_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"benchmark data not found at {path} (set TEXTPROP_SHARED_DATA to the "
                    "folder holding bbh/ and gsm8k/)")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- BBH -------------------------------------------------------------------------------------


def test_bbh_splits_in_file_order_50_100_rest():
    path = shared("bbh/bbh/object_counting.json")
    original = json.loads(path.read_text(encoding="utf-8"))["examples"]

    splits = load_bbh(path)

    assert [len(s) for s in splits] == [50, 100, 100]
    loaded = [(e.input, e.target) for s in splits for e in s]
    assert loaded == [(e["input"], e["target"]) for e in original]
    assert [splits.train[0].id, splits.val[0].id, splits.test[-1].id] == [
        "bbh-object_counting-0", "bbh-object_counting-50", "bbh-object_counting-249"]
    assert [s.name for s in splits] == [
        "bbh-object_counting-train", "bbh-object_counting-val", "bbh-object_counting-test"]


def test_a_shorter_bbh_task_keeps_what_remains_as_test():
    splits = load_bbh(shared("bbh/bbh/causal_judgement.json"))
    assert [len(s) for s in splits] == [50, 100, 37]


def test_bbh_split_on_a_generated_file(tmp_path):
    path = tmp_path / "my_task.json"
    rows = [{"input": f"q{i}", "target": str(i)} for i in range(160)]
    path.write_text(json.dumps({"canary": "c", "examples": rows}))
    train, val, test = load_bbh(path)
    assert ([e.target for e in train], [e.target for e in val], [e.target for e in test]) == (
        [str(i) for i in range(50)], [str(i) for i in range(50, 150)],
        [str(i) for i in range(150, 160)])


def test_a_bbh_file_too_small_for_the_split(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"examples": [{"input": "q", "target": "t"}] * 150}))
    with pytest.raises(ConfigError, match="has 150 examples; a BBH task needs more than 150"):
        load_bbh(path)


# --- GSM8K -----------------------------------------------------------------------------------


def test_gsm8k_reproduces_the_textgrad_dspy_split_indices():
    train_path, test_path = shared("gsm8k/train.jsonl"), shared("gsm8k/test.jsonl")
    indices = json.loads(shared("gsm8k/textgrad_dspy_split_indices.json").read_text())
    train_rows, test_rows = read_jsonl(train_path), read_jsonl(test_path)

    splits = load_gsm8k(train_path, test_path)

    expected = {
        "train": [train_rows[i] for i in indices["train_indices_into_train_jsonl"]],
        "val": [train_rows[i] for i in indices["val_indices_into_train_jsonl"]],
        "test": [test_rows[i] for i in indices["test_indices_into_test_jsonl"]],
    }
    for name, split in zip(("train", "val", "test"), splits, strict=True):
        assert [(e.input, e.fields["answer"]) for e in split] == [
            (r["question"], r["answer"]) for r in expected[name]], name
    assert [len(s) for s in splits] == [200, 300, 1319]
    assert splits.train[0].input.startswith("The result from the 40-item Statistics exam")


def test_gsm8k_targets_are_the_final_integers_without_commas():
    splits = load_gsm8k(shared("gsm8k/train.jsonl"), shared("gsm8k/test.jsonl"))
    examples = [e for s in splits for e in s]
    for example in examples:
        final = example.fields["answer"].rsplit("####", 1)[1].strip()
        assert example.target == final.replace(",", "")
        assert int(example.target) == int(final.replace(",", ""))
    assert any("," in e.fields["answer"].rsplit("####", 1)[1] for e in examples)


def gsm8k_file(path: Path, answers: list[str]) -> Path:
    rows = [{"question": f"q{i}", "answer": f"work\n#### {a}"} for i, a in enumerate(answers)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_gsm8k_split_logic_on_generated_files(tmp_path):
    answers = [str(i) for i in range(520)]
    answers[7], answers[8] = "1,234", "-12"
    train_path = gsm8k_file(tmp_path / "train.jsonl", answers)
    test_path = gsm8k_file(tmp_path / "test.jsonl", ["5", "6", "7"])

    train, val, test = load_gsm8k(train_path, test_path)

    order = list(range(520))
    random.Random(0).shuffle(order)
    assert [e.input for e in train] == [f"q{i}" for i in order[:200]]
    assert [e.input for e in val] == [f"q{i}" for i in order[200:500]]
    test_order = [0, 1, 2]
    random.Random(0).shuffle(test_order)
    assert [e.input for e in test] == [f"q{i}" for i in test_order]
    by_input = {e.input: e for s in (train, val) for e in s}
    assert (by_input["q7"].target, by_input["q8"].target) == ("1234", "-12")
    assert by_input["q7"].id == "gsm8k-train-7"
    assert by_input["q7"].fields["answer"] == "work\n#### 1,234"


def test_a_gsm8k_answer_without_the_final_marker(tmp_path):
    train_path = gsm8k_file(tmp_path / "train.jsonl", ["1"] * 500)
    test_path = tmp_path / "test.jsonl"
    test_path.write_text(json.dumps({"question": "q", "answer": "#### 3"}) + "\n"
                         + json.dumps({"question": "q", "answer": "it is 4"}) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_gsm8k(train_path, test_path)
    assert str(caught.value) == (f"{test_path}, line 2, field 'answer': "
                                 'does not end with "#### <integer>"')
