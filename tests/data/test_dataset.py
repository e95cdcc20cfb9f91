"""Loading the user's data files, and the Dataset operations the trainer relies on."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from textprop.data import Dataset, Example, load_dataset
from textprop.errors import ConfigError


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(*rows: object) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"


# --- loading ---------------------------------------------------------------------------------


def test_jsonl_maps_fields_and_records_where_each_row_came_from(tmp_path):
    path = write(tmp_path / "train.jsonl", jsonl(
        {"question": "2+2?", "answer": 4, "topic": "sums"},
        "",  # blank lines are skipped, but still counted for line numbers
        {"question": "3+4?", "answer": "7", "topic": "sums", "hard": True, "tags": ["a"]},
    ))

    data = load_dataset(path, input_field="question", target_field="answer")

    assert data.name == "train"
    assert list(data) == [
        Example(id="train-0", input="2+2?", target="4", fields={"topic": "sums"},
                source=f"{path}:1"),
        Example(id="train-1", input="3+4?", target="7",
                fields={"topic": "sums", "hard": "true", "tags": '["a"]'},
                source=f"{path}:3"),
    ]


def test_an_id_field_gives_the_ids(tmp_path):
    path = write(tmp_path / "d.jsonl", jsonl({"key": "q7", "input": "a", "target": "b"}))
    (example,) = load_dataset(path, id_field="key")
    assert (example.id, dict(example.fields)) == ("q7", {})


def test_csv_rows_are_located_by_their_first_line_even_after_multiline_cells(tmp_path):
    path = write(tmp_path / "d.csv", 'input,target,note\n"two\nlines",1,x\n\nthree,3,\n')
    data = load_dataset(path)
    assert [(e.input, e.target, e.source) for e in data] == [
        ("two\nlines", "1", f"{path}:2"),
        ("three", "3", f"{path}:5"),
    ]
    assert dict(data[0].fields) == {"note": "x"}


def test_tsv_and_an_explicit_format(tmp_path):
    tsv = write(tmp_path / "d.tsv", "input\ttarget\na, b\tc\n")
    assert load_dataset(tsv)[0].input == "a, b"
    txt = write(tmp_path / "d.txt", jsonl({"input": "x", "target": "y"}))
    assert load_dataset(txt, format="jsonl")[0].target == "y"


def test_json_list_or_examples_object_with_the_line_of_each_item(tmp_path):
    listing = write(tmp_path / "list.json",
                    '[\n  {"input": "a", "target": "1"},\n\n  {"input": "b", "target": "2"}\n]')
    bbh_like = write(tmp_path / "task.json", json.dumps(
        {"canary": "x", "examples": [{"input": "a", "target": "1"}]}, indent=1))

    assert [e.source for e in load_dataset(listing)] == [f"{listing}:2", f"{listing}:4"]
    assert [e.source for e in load_dataset(bbh_like)] == [f"{bbh_like}:4"]


def test_records_in_memory_get_the_same_checks():
    data = Dataset.from_records([{"input": "a", "target": "b"}], name="mine")
    assert data[0] == Example(id="mine-0", input="a", target="b", source="mine[0]")
    with pytest.raises(ConfigError) as caught:
        Dataset.from_records([{"input": "a", "target": "b"}, {"input": "c"}], name="mine")
    assert str(caught.value) == "mine[1], field 'target': missing (the row has: input)"


def test_inputs_only_when_there_is_no_target_field(tmp_path):
    path = write(tmp_path / "d.jsonl", jsonl({"input": "write a poem"}))
    assert load_dataset(path, target_field=None)[0].target == ""


# --- errors ----------------------------------------------------------------------------------


def test_a_bad_row_is_named_by_file_line_and_field(tmp_path):
    path = write(tmp_path / "train.jsonl", jsonl(
        {"question": "ok", "answer": "1"},
        {"question": "no answer"},
    ))
    with pytest.raises(ConfigError) as caught:
        load_dataset(path, input_field="question", target_field="answer")
    error = caught.value
    assert str(error) == f"{path}, line 2, field 'answer': missing (the row has: question)"
    assert (error.source, error.line, error.field) == (str(path), 2, "answer")


def test_every_kind_of_bad_row_is_reported_in_one_error_with_a_count_of_the_rest(tmp_path):
    path = write(tmp_path / "d.jsonl", jsonl(
        '{"input": "a" "target": "b"}',
        '["not", "an", "object"]',
        {"input": None, "target": "b"},
        {"input": "  ", "target": "b"},
        {"input": {"nested": 1}, "target": "b"},
        {"input": "fine", "target": "b"},
        {"target": "b"},
        {"target": "b"},
    ))
    with pytest.raises(ConfigError) as caught:
        load_dataset(path)
    assert str(caught.value).split("\n") == [
        f"{path}, line 1: not valid JSON: Expecting ',' delimiter (column 15)",
        f"{path}, line 2: expected an object with named fields, got an array",
        f"{path}, line 3, field 'input': is null",
        f"{path}, line 4, field 'input': empty",
        f"{path}, line 5, field 'input': expected text, got an object",
        "... and 2 more bad rows",
    ]
    assert caught.value.line == 1


def test_duplicate_ids_are_rejected(tmp_path):
    path = write(tmp_path / "d.jsonl", jsonl(*({"id": "x", "input": "a", "target": "b"},) * 2))
    with pytest.raises(ConfigError, match=r"line 2, field 'id': duplicate id 'x' \(first at "):
        load_dataset(path, id_field="id")


def test_a_csv_without_the_column_fails_on_the_header(tmp_path):
    path = write(tmp_path / "d.csv", "question,target\nq,1\n")
    with pytest.raises(ConfigError) as caught:
        load_dataset(path)
    assert str(caught.value) == (f"{path}, line 1, field 'input': no such column "
                                 "(columns: question, target)")


def test_a_csv_row_with_too_many_cells(tmp_path):
    path = write(tmp_path / "d.csv", "input,target\na,b,c\n")
    with pytest.raises(ConfigError, match="line 2: 3 cells but the header has 2 columns"):
        load_dataset(path)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("empty.jsonl", "\n\n", "no examples: the dataset is empty"),
    ("empty.csv", "", "no header row; the first row must name the columns"),
    ("header.csv", "input,target\n", "no examples: the dataset is empty"),
    ("scalar.json", '"text"', 'expected a list of objects or an object with an "examples" list'),
    ("broken.json", '[\n{"input": }\n]', "line 2: not valid JSON: Expecting value (column 11)"),
    ("data.xml", "<x/>", "cannot tell the data format from the suffix '.xml'; "
                         "use .jsonl, .csv, .tsv or .json, or pass format=..."),
])
def test_whole_file_problems(tmp_path, name, text, message):
    path = write(tmp_path / name, text)
    with pytest.raises(ConfigError) as caught:
        load_dataset(path)
    separator = ", " if message.startswith("line") else ": "
    assert str(caught.value) == f"{path}{separator}{message}"


def test_a_missing_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_dataset(tmp_path / "nope.jsonl")
    assert str(caught.value) == f"{tmp_path / 'nope.jsonl'}: file not found"


# --- Dataset ---------------------------------------------------------------------------------


def numbered(n: int) -> Dataset:
    return Dataset((Example(id=str(i), input=f"q{i}", target=str(i)) for i in range(n)), "d")


def ids(data) -> list[str]:
    return [e.id for e in data]


def test_examples_and_their_fields_are_immutable():
    example = Example(id="1", input="a", target="b", fields={"k": "v"})
    with pytest.raises(AttributeError):
        example.target = "c"  # type: ignore[misc]
    with pytest.raises(TypeError):
        example.fields["k"] = "w"  # type: ignore[index]
    assert hash(example) == hash(Example(id="1", input="a", target="b", fields={"k": "w"}))
    assert pickle.loads(pickle.dumps(example)) == example == copy.deepcopy(example)


def test_indexing_and_slicing():
    data = numbered(5)
    assert data[1].id == "1"
    assert isinstance(data[1:3], Dataset) and ids(data[1:3]) == ["1", "2"]
    assert repr(data) == "Dataset('d', 5 examples)"


def test_shuffled_is_a_seeded_permutation_and_leaves_the_original_alone():
    data = numbered(20)
    assert ids(data.shuffled(1)) == ids(data.shuffled(1))
    assert ids(data.shuffled(1)) != ids(data.shuffled(2))
    assert sorted(ids(data.shuffled(1)), key=int) == ids(data)
    assert ids(data) == [str(i) for i in range(20)]


def test_split_by_counts_keeps_order_and_leaves_out_the_rest():
    train, val = numbered(10).split(3, 5)
    assert (ids(train), ids(val)) == (["0", "1", "2"], ["3", "4", "5", "6", "7"])
    assert (train.name, val.name) == ("d[0:3]", "d[3:8]")


def test_split_by_fractions_rounds_so_that_parts_sum_up():
    third = 1 / 3
    parts = numbered(10).split(third, third, third, seed=0)
    assert [len(p) for p in parts] == [3, 4, 3]
    assert sorted(sum((ids(p) for p in parts), []), key=int) == ids(numbered(10))
    assert ids(parts[0]) == ids(numbered(10).shuffled(0)[:3])


@pytest.mark.parametrize("parts", [(6, 5), (0.5, 0.6), (3, 0.5), (-1, 2), ()])
def test_impossible_splits(parts):
    with pytest.raises(ConfigError):
        numbered(10).split(*parts)


def test_batches_cover_every_example_once_in_a_seeded_order():
    data = numbered(7)
    batches = data.batches(3, seed=4)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert sorted(sum((ids(b) for b in batches), []), key=int) == ids(data)
    assert [ids(b) for b in batches] == [ids(b) for b in data.batches(3, seed=4)]
    assert [ids(b) for b in data.batches(3)] == [["0", "1", "2"], ["3", "4", "5"], ["6"]]
    assert [len(b) for b in data.batches(3, seed=4, drop_last=True)] == [3, 3]


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_batch_size_must_be_a_positive_integer(size):
    with pytest.raises(ConfigError, match="batch size must be a positive integer"):
        numbered(3).batches(size)
