"""Examples, datasets and the loader for the user's own data files (JSONL, CSV/TSV, JSON).

A bad data file fails once, up front, with one `ConfigError` naming the file, the line and the
field of the first few bad rows: a typo in a field name should not surface as a crash halfway
through a paid training run.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, overload

from textprop.errors import ConfigError

MAX_REPORTED = 5  # bad rows described in one error; the rest are counted
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".json": "json"}


@dataclass(frozen=True)
class Example:
    """One row: the `input` the pipeline gets, the `target` the metric compares against.

    `fields` keeps the row's other named values (as text) for prompts and metrics that need
    them; `source` says where the row came from ("data/train.jsonl:12") for error messages.
    """

    id: str
    input: str
    target: str
    fields: Mapping[str, str] = field(default_factory=dict, hash=False)
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))

    def __reduce__(self) -> tuple[Any, ...]:  # a mappingproxy cannot be pickled or deep-copied
        return Example, (self.id, self.input, self.target, dict(self.fields), self.source)


class Dataset(Sequence[Example]):
    """An immutable, named sequence of examples. Reordering methods return new datasets."""

    def __init__(self, examples: Iterable[Example], name: str = "dataset") -> None:
        self.examples: tuple[Example, ...] = tuple(examples)
        self.name = name

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], *, name: str = "dataset",
                     input_field: str = "input", target_field: str | None = "target",
                     id_field: str | None = None) -> Dataset:
        """Build a dataset from in-memory rows (dicts), with the same checks as `load_dataset`."""
        return _build(enumerate(records), name=name, source=name, input_field=input_field,
                      target_field=target_field, id_field=id_field, unit="item")

    def __len__(self) -> int:
        return len(self.examples)

    @overload
    def __getitem__(self, index: int) -> Example: ...

    @overload
    def __getitem__(self, index: slice) -> Dataset: ...

    def __getitem__(self, index: int | slice) -> Example | Dataset:
        if isinstance(index, slice):
            return Dataset(self.examples[index], self.name)
        return self.examples[index]

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {len(self)} examples)"

    def renamed(self, name: str) -> Dataset:
        return Dataset(self.examples, name)

    def shuffled(self, seed: int) -> Dataset:
        """The examples in an order fixed by `seed` (`random.Random(seed).shuffle`)."""
        examples = list(self.examples)
        random.Random(seed).shuffle(examples)
        return Dataset(examples, self.name)

    def split(self, *parts: int | float, seed: int | None = None) -> tuple[Dataset, ...]:
        """Consecutive parts of the dataset (shuffled first when `seed` is given).

        Parts are all counts (`split(50, 100)`) or all fractions (`split(0.8, 0.2)`); examples
        beyond the parts are left out. Fractions are rounded so that they sum up exactly.
        """
        if not parts:
            raise ConfigError("split needs at least one part size")
        source = self.shuffled(seed) if seed is not None else self
        bounds = [0, *_bounds(parts, len(self))]
        return tuple(
            Dataset(source.examples[a:b], f"{self.name}[{a}:{b}]")
            for a, b in zip(bounds, bounds[1:], strict=False)
        )

    def batches(self, size: int, seed: int | None = None, *,
                drop_last: bool = False) -> list[Dataset]:
        """The dataset cut into batches of `size`, shuffled by `seed` first when given.

        The same `seed` gives the same batches; use a different seed per epoch to reshuffle.
        """
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"batch size must be a positive integer, got {size!r}")
        source = self.shuffled(seed) if seed is not None else self
        stop = len(self) - len(self) % size if drop_last else len(self)
        return [Dataset(source.examples[i:i + size], f"{self.name} batch {i // size}")
                for i in range(0, stop, size)]


class Splits(NamedTuple):
    """The three datasets of an optimization run."""

    train: Dataset
    val: Dataset
    test: Dataset


def _bounds(parts: Sequence[int | float], total: int) -> list[int]:
    """Cumulative end indices of `parts` (all counts or all fractions) within `total` rows."""
    if all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
        ends = [sum(parts[:i + 1]) for i in range(len(parts))]
        if any(p < 0 for p in parts) or ends[-1] > total:
            raise ConfigError(f"cannot split {total} examples into parts of {list(parts)}")
        return ends
    if not all(isinstance(p, float) for p in parts):
        raise ConfigError(f"split parts must be all counts or all fractions, got {list(parts)}")
    cumulative = [sum(parts[:i + 1]) for i in range(len(parts))]
    if any(p < 0 for p in parts) or cumulative[-1] > 1 + 1e-9:
        raise ConfigError(f"split fractions must be non-negative and sum to at most 1, "
                          f"got {list(parts)}")
    return [min(total, round(c * total)) for c in cumulative]


# --- loading files ------------------------------------------------------------------------


def load_dataset(path: str | Path, *, input_field: str = "input",
                 target_field: str | None = "target", id_field: str | None = None,
                 format: str | None = None, name: str | None = None) -> Dataset:
    """Load examples from a JSONL, CSV, TSV or JSON file, mapping named fields.

    JSON holds a list of objects or an object with an "examples" list. `format` ("jsonl",
    "csv", "tsv", "json") overrides the guess from the file suffix. `target_field=None` loads
    inputs only (for judge-scored tasks). Other fields of a row go to `Example.fields`.
    The default id is `<file stem>-<row index>`; with `id_field`, ids must be unique.
    """
    path = Path(path)
    source = str(path)
    kind = _format(path, format)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError("file not found", source=source) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, expected a data file", source=source) from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"not UTF-8 text ({error.reason} at byte {error.start})",
                          source=source) from None
    reader = {"jsonl": _jsonl_rows, "json": _json_rows}.get(kind)
    if reader is not None:
        rows = reader(text, source)
    else:
        rows = _csv_rows(text, source, delimiter="\t" if kind == "tsv" else ",",
                         needed=[f for f in (input_field, target_field, id_field) if f])
    return _build(rows, name=name or path.stem, source=source, input_field=input_field,
                  target_field=target_field, id_field=id_field, unit="line")


def _format(path: Path, format: str | None) -> str:
    if format is not None:
        if format not in set(FORMATS.values()):
            raise ConfigError(f"unknown data format {format!r}; use one of jsonl, csv, tsv, json")
        return format
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"cannot tell the data format from the suffix {path.suffix!r}; "
                          "use .jsonl, .csv, .tsv or .json, or pass format=...",
                          source=str(path))
    return kind


class _BadRow(Exception):
    """A row-level problem, collected so that one error can report several rows."""

    def __init__(self, message: str, line: int | None, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.line, self.field = message, line, field


Row = tuple[int, Any]  # (line number, parsed row) or a _BadRow in its place


def _jsonl_rows(text: str, source: str) -> Iterator[Row | _BadRow]:
    # split on "\n" only: str.splitlines would also cut at U+2028, which JSON strings may hold
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            yield _BadRow(f"not valid JSON: {error.msg} (column {error.colno})", number)


def _json_rows(text: str, source: str) -> list[Row]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"not valid JSON: {error.msg} (column {error.colno})",
                          source=source, line=error.lineno) from None
    if isinstance(data, list):
        items, start = data, _skip_ws(text, 0)
    elif isinstance(data, dict) and isinstance(data.get("examples"), list):
        items, start = data["examples"], _member_position(text, "examples")
    else:
        raise ConfigError('expected a list of objects or an object with an "examples" list',
                          source=source)
    return list(zip(_element_lines(text, start), items, strict=True))


_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _skip_ws(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()  # type: ignore[union-attr]  # always matches


def _member_position(text: str, key: str) -> int:
    """Where the value of top-level `key` starts in valid JSON `text` (the last one wins)."""
    pos, found = _skip_ws(text, 0) + 1, -1  # past "{"
    while True:
        pos = _skip_ws(text, pos)
        if text[pos] == "}":
            return found
        name, pos = _DECODER.raw_decode(text, pos)
        pos = _skip_ws(text, _skip_ws(text, pos) + 1)  # past ":"
        if name == key:
            found = pos
        pos = _skip_ws(text, _DECODER.raw_decode(text, pos)[1])
        if text[pos] == ",":
            pos += 1


def _element_lines(text: str, pos: int) -> list[int]:
    """The line on which each element of the valid JSON array at `pos` starts."""
    lines, line, counted = [], 1, 0
    pos += 1  # past "["
    while True:
        pos = _skip_ws(text, pos)
        if text[pos] == "]":
            return lines
        line += text.count("\n", counted, pos)
        counted = pos
        lines.append(line)
        pos = _skip_ws(text, _DECODER.raw_decode(text, pos)[1])
        if text[pos] == ",":
            pos += 1


def _csv_rows(text: str, source: str, *, delimiter: str,
              needed: list[str]) -> Iterator[Row | _BadRow]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    header_line, end = 0, 0
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            if not cells:
                continue
            if header is None:
                header, header_line = [c.strip() for c in cells], start
                _check_header(header, source, header_line, needed)
                continue
            if len(cells) > len(header):
                yield _BadRow(f"{len(cells)} cells but the header has {len(header)} columns",
                              start)
                continue
            yield start, dict(zip(header, cells, strict=False))
    except csv.Error as error:
        yield _BadRow(f"not valid CSV: {error}", reader.line_num)
    if header is None:
        raise ConfigError("no header row; the first row must name the columns", source=source)


def _check_header(header: list[str], source: str, line: int, needed: list[str]) -> None:
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise ConfigError(f"duplicate column {duplicates[0]!r} in the header",
                          source=source, line=line)
    for name in needed:
        if name not in header:
            raise ConfigError(f"no such column (columns: {', '.join(header)})",
                              source=source, line=line, field=name)


def _build(rows: Iterable[Row | _BadRow], *, name: str, source: str, input_field: str,
           target_field: str | None, id_field: str | None, unit: str) -> Dataset:
    """Turn located rows into a dataset, or raise one ConfigError listing the bad rows."""
    examples: list[Example] = []
    problems: list[_BadRow] = []
    first_line_of_id: dict[str, int] = {}
    for row in rows:
        if isinstance(row, _BadRow):
            problems.append(row)
            continue
        line, record = row
        try:
            example = _example(record, line=line, index=len(examples), name=name,
                               where=_where(source, unit, line), input_field=input_field,
                               target_field=target_field, id_field=id_field)
        except _BadRow as bad:
            problems.append(bad)
            continue
        if example.id in first_line_of_id:
            first = first_line_of_id[example.id]
            problems.append(_BadRow(f"duplicate id {example.id!r} (first at "
                                    f"{_where(source, unit, first)})", line, id_field))
            continue
        first_line_of_id[example.id] = line
        examples.append(example)
    if problems:
        raise _combined(problems, source, unit)
    if not examples:
        raise ConfigError("no examples: the dataset is empty", source=source)
    return Dataset(examples, name)


def _example(record: Any, *, line: int, index: int, name: str, where: str, input_field: str,
             target_field: str | None, id_field: str | None) -> Example:
    if not isinstance(record, Mapping):
        raise _BadRow(f"expected an object with named fields, got {_json_kind(record)}", line)
    input_text = _required_text(record, input_field, line)
    target = _required_text(record, target_field, line) if target_field else ""
    example_id = _required_text(record, id_field, line) if id_field else f"{name}-{index}"
    used = {input_field, target_field, id_field}
    extras = {str(k): _as_text(v) for k, v in record.items() if k not in used and v is not None}
    return Example(id=example_id, input=input_text, target=target, fields=extras,
                   source=where)


def _required_text(record: Mapping[str, Any], name: str, line: int) -> str:
    if name not in record:
        keys = ", ".join(str(k) for k in list(record)[:8]) + (", ..." if len(record) > 8 else "")
        raise _BadRow(f"missing (the row has: {keys})" if keys else "missing", line, name)
    value = record[name]
    if value is None:
        raise _BadRow("is null", line, name)
    if isinstance(value, list | dict):
        raise _BadRow(f"expected text, got {_json_kind(value)}", line, name)
    text = _as_text(value)
    if not text.strip():
        raise _BadRow("empty", line, name)
    return text


def _as_text(value: Any) -> str:
    """Field values as text: JSON scalars as written in JSON, nested values as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _json_kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _combined(problems: list[_BadRow], source: str, unit: str) -> ConfigError:
    """One error for many bad rows: the first few in full, then how many more."""
    errors = [_located(p, source, unit) for p in problems]
    described = [str(e) for e in errors[:MAX_REPORTED]]
    if len(problems) > MAX_REPORTED:
        described.append(f"... and {len(problems) - MAX_REPORTED} more bad rows")
    first = errors[0]
    combined = ConfigError("\n".join(described))
    combined.source, combined.line, combined.field = first.source, first.line, first.field
    return combined


def _located(problem: _BadRow, source: str, unit: str) -> ConfigError:
    if unit == "line" or problem.line is None:
        return ConfigError(problem.message, source=source, line=problem.line,
                           field=problem.field)
    return ConfigError(problem.message, source=_where(source, unit, problem.line),
                       field=problem.field)


def _where(source: str, unit: str, position: int) -> str:
    """A row's location: "data/train.jsonl:12" (a line) or "records[3]" (an item index)."""
    return f"{source}:{position}" if unit == "line" else f"{source}[{position}]"
