"""The run report: a run's ledger as one self-contained HTML page, reviewed like a code review.

Each step reads like a commit: its status and why, the scores it moved, a line diff of every
parameter's before -> after, the feedback that drove the change and the batch that produced
that feedback. Every text from the ledger is escaped (prompts routinely contain <TAGS>), and
the page needs no network, script or asset: it can be attached to a pull request or an email.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from textprop import __version__
from textprop.engines.registry import public_spec
from textprop.ledger import Ledger
from textprop.report.chart import Series, line_chart

KEPT = ("baseline", "accepted")  # statuses whose values were in force afterwards
_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


# --- entry points ---------------------------------------------------------------------------
def render_report(ledger: Ledger) -> str:
    """The whole page for `ledger` (deterministic: the same ledger gives the same bytes)."""
    run = _Run.load(ledger)
    fields = {
        "title": escape(f"{run.name} — textprop report"),
        "header": _header(run),
        "overview": _overview(run),
        "net_change": _net_change(run),
        "usage": _usage(run.usage, run.unpriced_roles()),
        "steps": _steps(run),
        "footer": _footer(run),
    }
    return _template().substitute(fields)


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Render the run in `run_dir` to `out` (default `run_dir/report.html`); return the path."""
    run_dir = Path(run_dir)
    ledger_path = run_dir / Ledger.FILE_NAME
    if not ledger_path.is_file():  # Ledger() would create an empty one
        raise FileNotFoundError(f"no run ledger at {ledger_path}")
    ledger = Ledger(ledger_path, read_only=True)
    try:
        page = render_report(ledger)
    finally:
        ledger.close()
    target = Path(out) if out is not None else run_dir / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target


def _template() -> Template:
    text = resources.files("textprop.report").joinpath("template.html").read_text("utf-8")
    return Template(text)


# --- the data, read once --------------------------------------------------------------------
@dataclass
class _Step:
    row: dict[str, Any]
    revisions: list[dict[str, Any]]
    losses: list[dict[str, Any]]
    evaluations: dict[str, dict[str, Any]]
    calls: list[dict[str, Any]]
    approval: str | None
    best_before: float | None  # the validation score this step had to beat
    unpriced: bool = False  # an engine without a price made some of its calls

    @property
    def number(self) -> int:
        return int(self.row["step"])

    @property
    def status(self) -> str:
        return str(self.row["status"])


@dataclass
class _Run:
    name: str
    meta: dict[str, Any]
    steps: list[_Step]
    usage: dict[str, dict[str, float]]
    engines: dict[str, list[str]]  # role -> engines seen in its calls
    source: str

    @classmethod
    def load(cls, ledger: Ledger) -> _Run:
        meta = ledger.meta()
        unpriced = set(meta.get("unpriced") or [])
        steps: list[_Step] = []
        for row in ledger.steps():
            n = row["step"]
            calls = ledger.calls(n)
            steps.append(_Step(
                row=row, revisions=ledger.revisions(n), losses=ledger.losses(n),
                evaluations={e["split"]: e for e in ledger.evaluations(n)},
                calls=calls, approval=ledger.approval(n),
                best_before=_score_to_beat(steps),
                unpriced=any(c["engine"] in unpriced and not c["cached"] for c in calls)))
        engines: dict[str, list[str]] = {}
        for c in ledger.calls():
            if c["engine"] not in engines.setdefault(c["role"], []):
                engines[c["role"]].append(c["engine"])
        name = str(meta.get("name") or meta.get("run_name") or ledger.path.parent.name)
        return cls(name=name, meta=meta, steps=steps, usage=ledger.usage_by_role(),
                   engines=engines, source=ledger.path.name)

    def unpriced_roles(self) -> set[str]:
        """Roles whose engines include one without a price: their cost is unknown."""
        unpriced = set(self.meta.get("unpriced") or [])
        return {role for role, names in self.engines.items() if unpriced & set(names)}

    @property
    def baseline(self) -> _Step | None:
        return next((s for s in self.steps if s.status == "baseline"),
                    self.steps[0] if self.steps else None)

    @property
    def best(self) -> _Step | None:
        """The last kept step: its values are in force and its score is the one to beat.

        Not the highest validation score ever seen: an acceptance rule may keep a
        non-inferior proposal, which then becomes the reference (as in the trainer).
        """
        return next((s for s in reversed(self.steps)
                     if s.status in KEPT and s.row["val_score"] is not None), None)

    @property
    def final_test(self) -> float | None:
        """The test score of the values in force: the run's final test, else the best step's."""
        final = self.meta.get("final")
        if isinstance(final, dict) and final.get("test_score") is not None:
            return float(final["test_score"])
        return self.best.row["test_score"] if self.best else None

    @property
    def status(self) -> str:
        if self.meta.get("status"):
            return str(self.meta["status"])
        if self.steps and self.steps[-1].status == "pending":
            return "awaiting_approval"
        return "unfinished" if self.steps else "—"


def _score_to_beat(earlier: list[_Step]) -> float | None:
    """The previous step's recorded best validation score, else the last kept one's score."""
    if earlier and earlier[-1].row["best_val_score"] is not None:
        return float(earlier[-1].row["best_val_score"])
    kept = [s.row["val_score"] for s in earlier
            if s.status in KEPT and s.row["val_score"] is not None]
    return kept[-1] if kept else None


# --- formatting -----------------------------------------------------------------------------
def _score(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _delta(v: float | None, suffix: str = "") -> str:
    if v is None:
        return ""
    kind = "up" if v > 1e-12 else "down" if v < -1e-12 else "flat"
    text = f"{v:+.3f}".replace("-", "−")
    note = f' <span class="muted">{escape(suffix)}</span>' if suffix else ""
    return f'<span class="delta {kind}">{text}</span>{note}'


def _int(v: float | None) -> str:
    return f"{int(v or 0):,}"


def _cost(v: float | None, unknown: bool = False) -> str:
    """USD, or "unknown" where an engine without a price made calls (metered at $0)."""
    if unknown:
        return "unknown" if not v else f"≥ ${v:.4f} (some unknown)"
    v = v or 0.0
    return f"${v:,.2f}" if v >= 1 else f"${v:.4f}"


def _seconds(v: float | None) -> str:
    v = v or 0.0
    if v >= 120:
        return f"{int(v // 60)} min {v % 60:.0f} s"
    return f"{v:.1f} s"


def _when(v: Any) -> str:
    if isinstance(v, int | float):
        return datetime.fromtimestamp(v, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    return str(v)


def _text(v: Any) -> str:
    """A meta value as readable text: strings as is, anything else as compact JSON."""
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)


def _slug(v: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", v.lower()) or "unknown"


def _badge(status: str) -> str:
    return f'<span class="badge badge-{_slug(status)}">{escape(status)}</span>'


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str,
           foot: Sequence[str] | None = None) -> str:
    """A table from pre-rendered (already escaped) cells."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    tfoot = ("<tfoot><tr>" + "".join(f"<td>{c}</td>" for c in foot) + "</tr></tfoot>"
             if foot else "")
    return (f'<table class="{cls}"><thead><tr>{th}</tr></thead>'
            f"<tbody>{body}</tbody>{tfoot}</table>")


# --- header and overview --------------------------------------------------------------------
META_SHOWN = ("name", "run_name", "task", "engines", "started_at", "started", "status",
              "final")


def _engines(run: _Run) -> str:
    """The engines from meta (`engines` or `*_engine` keys), else as seen in the calls."""
    meta = run.meta
    engines = meta.get("engines")
    items: list[tuple[str, Any]]
    if isinstance(engines, dict):
        items = list(engines.items())
    elif engines:
        items = [("", engines)]
    else:
        items = [(k.removesuffix("_engine"), v) for k, v in sorted(meta.items())
                 if k.endswith("engine")]
    items = items or [(role, ", ".join(names)) for role, names in run.engines.items()]
    if not items:
        return "—"
    return " ".join(f'<span class="engine">{f"<b>{escape(str(role))}</b> " if role else ""}'
                    f"<code>{escape(public_spec(_text(name)))}</code></span>"
                    for role, name in items)


def _header(run: _Run) -> str:
    meta = run.meta
    started = meta.get("started_at") or meta.get("started") or (
        run.steps[0].row["started_at"] if run.steps else None)
    status = run.status
    facts = [
        ("Task", escape(_text(meta["task"])) if meta.get("task") else "—"),
        ("Engines", _engines(run)),
        ("Started", escape(_when(started)) if started is not None else "—"),
        ("Status", _badge(status) if status != "—" else "—"),
        ("Steps", str(sum(1 for s in run.steps if s.status != "baseline"))),
    ]
    dl = "".join(f'<div class="fact"><dt>{k}</dt><dd>{v}</dd></div>' for k, v in facts)
    extra = {k: v for k, v in sorted(meta.items())
             if k not in META_SHOWN and not k.endswith("engine")}
    settings = ""
    if extra:
        rows = [(f"<code>{escape(k)}</code>", escape(_text(v))) for k, v in extra.items()]
        settings = ('<details class="settings"><summary>Run settings '
                    f'({len(extra)})</summary>{_table(["Key", "Value"], rows, "kv")}</details>')
    return (f'<p class="eyebrow">textprop run report</p><h1>{escape(run.name)}</h1>'
            f'<dl class="facts">{dl}</dl>{settings}')


def _kpi(label: str, value: str, note: str) -> str:
    return (f'<div class="kpi"><div class="kpi-label">{label}</div>'
            f'<div class="kpi-value">{value}</div><div class="kpi-note">{note}</div></div>')


def _score_kpi(label: str, before: float | None, after: float | None, note: str) -> str:
    """Baseline -> values in force for one score, with the change between them."""
    change = _delta(after - before) if before is not None and after is not None else ""
    value = (f'<span class="from">{_score(before)}</span> <span class="arrow">→</span> '
             f'<span class="to">{_score(after)}</span> {change}')
    return _kpi(label, value, note)


def _step_link(step: _Step | None) -> str:
    return f'<a href="#step-{step.number}">step {step.number}</a>' if step else ""


def _overview(run: _Run) -> str:
    base, best = run.baseline, run.best
    if base is None:
        return '<p class="empty">No steps recorded yet.</p>'
    counts = {st: sum(1 for s in run.steps if s.status == st)
              for st in ("accepted", "rejected", "pending", "skipped")}
    tally = " · ".join(f'<span class="count count-{st}">{n} {st}</span>'
                       for st, n in counts.items() if n)
    total_cost = sum(u["cost_usd"] or 0.0 for u in run.usage.values())
    unpriced = bool(run.unpriced_roles())
    total_calls = sum(u["calls"] or 0 for u in run.usage.values())
    final_test, link = run.final_test, _step_link(best)
    cards = [_score_kpi("Validation", base.row["val_score"],
                        best.row["val_score"] if best else None,
                        f"baseline → best at {link}" if best else "no validation score"),
             _score_kpi("Test", base.row["test_score"], final_test,
                        f"baseline → values of {link}" if final_test is not None
                        else f"not measured for {link}" if best else "no test score"),
             _kpi("Steps", str(sum(counts.values())), tally or "baseline only"),
             _kpi("Cost", _cost(total_cost, unpriced), f"{_int(total_calls)} calls")]
    return f'<div class="kpis">{"".join(cards)}</div>{_chart(run)}'


def _chart(run: _Run) -> str:
    xs = [s.number for s in run.steps]
    column = {k: [s.row[k] for s in run.steps] for k in ("batch_score", "val_score",
                                                         "test_score")}
    final_test, best = run.final_test, run.best
    if final_test is not None and best is not None and best.row["test_score"] is None:
        column["test_score"][run.steps.index(best)] = final_test  # the final test's values
    series = [Series("batch", "batch", column["batch_score"], "#94a3b8", dashed=True),
              Series("val", "validation", column["val_score"], "#4f46e5", marked=True,
                     bridge_gaps=True)]  # a skipped step has no validation score
    if any(v is not None for v in column["test_score"]):
        series.append(Series("test", "test", column["test_score"], "#0d9488",
                             bridge_gaps=True))
    svg = line_chart(xs, series, [s.status for s in run.steps])
    return (f'<figure class="chart-box">{svg}<figcaption>Scores per step. Validation points '
            "are the candidate's score, shaped by the decision; click one to jump to its "
            "step.</figcaption></figure>")


# --- net change and usage -------------------------------------------------------------------
def _net_change(run: _Run) -> str:
    base, best = run.baseline, run.best
    if base is None or best is None or best is base:
        return '<p class="empty">No accepted change yet: the baseline is still the best.</p>'
    names = list(dict.fromkeys([*base.row["values"], *best.row["values"]]))
    blocks = []
    for n in names:
        before, after = base.row["values"].get(n, ""), best.row["values"].get(n, "")
        same = "" if before != after else '<span class="muted small">no change</span>'
        blocks.append(f'<div class="param"><div class="param-head"><code class="param-name">'
                      f"{escape(n)}</code>{same}</div>"
                      f"{diff_table(before, after) if before != after else ''}</div>")
    return (f'<p class="lede">Baseline → <a href="#step-{best.number}">step {best.number}</a>'
            f', the values in force.</p>{"".join(blocks)}')


def _usage(usage: dict[str, dict[str, float]], unpriced: set[str] = frozenset()) -> str:
    if not usage:
        return '<p class="empty">No calls recorded.</p>'
    head = ["Role", "Calls", "Cache hits", "Tokens in", "Tokens out", "Cost", "Latency",
            "Latency / call"]
    rows = [_usage_row(f"<code>{escape(role)}</code>", u, role in unpriced)
            for role, u in usage.items()]
    total = {k: sum(u[k] or 0 for u in usage.values()) for k in next(iter(usage.values()))}
    return _table(head, rows, "usage num", foot=_usage_row("Total", total, bool(unpriced)))


def _usage_row(label: str, u: dict[str, float], unpriced: bool = False) -> list[str]:
    calls, hits = int(u["calls"] or 0), int(u["cache_hits"] or 0)
    share = f' <span class="muted">({hits / calls:.0%})</span>' if calls else ""
    return [label, _int(calls), f"{_int(hits)}{share}", _int(u["input_tokens"]),
            _int(u["output_tokens"]), _cost(u["cost_usd"], unpriced), _seconds(u["latency_s"]),
            _seconds((u["latency_s"] or 0.0) / calls if calls else 0.0)]


def _footer(run: _Run) -> str:
    return (f"Generated by textprop {escape(__version__)} from "
            f"<code>{escape(run.source)}</code>.")


# --- steps ----------------------------------------------------------------------------------
def _steps(run: _Run) -> str:
    if not run.steps:
        return '<p class="empty">No steps recorded yet.</p>'
    index = "".join(f'<a class="chip chip-{_slug(s.status)}" href="#step-{s.number}" '
                    f'title="{escape(s.status)}">{s.number}</a>' for s in run.steps)
    return (f'<nav class="step-index" aria-label="Steps">{index}</nav>'
            + "".join(_step(s) for s in run.steps))


def _step(step: _Step) -> str:
    row = step.row
    calls = step.calls
    facts = [f"epoch {row['epoch'] + 1}",  # counted from 1, as in `textprop history`
             *([f"batch of {len(row['batch'])}"] if row["batch"] else []),
             f"{len(calls)} calls", _cost(sum(c["cost_usd"] for c in calls),
                                          unknown=step.unpriced),
             _seconds(max(0.0, row["finished_at"] - row["started_at"]))]
    approval = (f' <span class="approval">human review: {_badge(step.approval)}</span>'
                if step.approval else "")
    head = (f'<header class="step-head"><h3><a href="#step-{step.number}">Step '
            f"{step.number}</a></h3>{_badge(step.status)}{approval}"
            f'<span class="step-facts">{escape(" · ".join(facts))}</span></header>')
    reason = f'<p class="reason">{escape(row["reason"])}</p>' if row["reason"] else ""
    body = (_initial_values(row["values"]) if step.status == "baseline" and not step.revisions
            else "".join(_revision(r, step.status) for r in step.revisions)
            or '<p class="empty">No parameter revisions recorded for this step.</p>')
    return (f'<section class="step step-{_slug(step.status)}" id="step-{step.number}">'
            f"{head}{_step_scores(step)}{reason}{body}{_losses(step.losses)}</section>")


def _step_scores(step: _Step) -> str:
    row = step.row
    n = {split: len(e["per_example"]) for split, e in step.evaluations.items()}
    val_n = n.get("val") or n.get("val_proposal")
    vs_best = (_delta(row["val_score"] - step.best_before, f"vs best {step.best_before:.3f}")
               if row["val_score"] is not None and step.best_before is not None else "")
    items = [
        ("Batch", _score(row["batch_score"]), ""),
        ("Validation", _score(row["val_score"]),
         vs_best + (f' <span class="muted">· n={val_n}</span>' if val_n else "")),
        ("Test", _score(row["test_score"]),
         f' <span class="muted">· n={n["test"]}</span>' if n.get("test") else ""),
    ]
    cells = " ".join(f'<div class="score"><span class="score-label">{k}</span> '
                     f'<span class="score-value">{v}</span> {extra}</div>'
                     for k, v, extra in items)
    return f'<div class="scores">{cells}</div>'


def _initial_values(values: dict[str, str]) -> str:
    blocks = [f'<div class="param"><div class="param-head"><code class="param-name">'
              f'{escape(name)}</code><span class="muted">initial value</span></div>'
              f'<pre class="value">{escape(value)}</pre></div>' for name, value in values.items()]
    return "".join(blocks)


def _revision(rev: dict[str, Any], step_status: str) -> str:
    changed = rev["before"] != rev["after"]
    note = '<span class="muted small">no change</span>'
    if changed and step_status in ("rejected", "pending", "skipped"):
        verdict = "awaiting decision" if step_status == "pending" else "not applied"
        note = f'<span class="proposal-note">proposal, {verdict}</span>'
    elif changed:
        note = ""
    role = (f'<span class="role">{escape(rev["role_description"])}</span>'
            if rev["role_description"] else "")
    reason = (f'<p class="update-reason">{escape(rev["update_reason"])}</p>'
              if rev["update_reason"] else "")
    feedback = rev["feedback"].strip()
    details = (f'<details class="feedback"><summary>Feedback that drove this change '
               f'<span class="muted">({len(feedback.split())} words)</span></summary>'
               f'<div class="feedback-body">{escape(feedback)}</div></details>'
               if feedback else "")
    return (f'<div class="param"><div class="param-head"><code class="param-name">'
            f'{escape(rev["name"])}</code>{role}'
            f'<span class="pill pill-{_slug(rev["update_status"])}">'
            f'{escape(rev["update_status"])}</span>{note}</div>{reason}'
            f"{diff_table(rev['before'], rev['after']) if changed else ''}{details}</div>")


def _losses(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    mean = sum(r["score"] for r in rows) / len(rows)
    body = [(f'<code>{escape(r["example_id"])}</code>', _score_chip(r["score"]),
             _cell(r["prediction"]), _cell(r["target"]), _cell(r["explanation"]))
            for r in rows]
    table = _table(["Example", "Score", "Prediction", "Target", "Explanation"], body, "losses")
    return (f'<div class="losses"><h4>Batch losses <span class="muted">{len(rows)} examples'
            f" · mean {mean:.3f}</span></h4>{table}</div>")


def _cell(text: str) -> str:
    return f'<div class="cell">{escape(text)}</div>'


def _score_chip(v: float) -> str:
    kind = "good" if v >= 0.999 else "bad" if v <= 0.001 else "partial"
    return f'<span class="chip-score {kind}">{v:.2f}</span>'


# --- the line diff --------------------------------------------------------------------------
def diff_table(before: str, after: str, context: int = 3) -> str:
    """A line diff of before -> after as an HTML table, changed words marked with <del>/<ins>.

    Lines are compared with difflib; a replaced line is paired with its counterpart and
    diffed word by word, so a one-word edit in a long prompt paragraph stands out. Unchanged
    runs longer than `context` lines around a change are folded into a gap row.
    """
    if before == after:
        return '<p class="no-change">No change.</p>'
    a, b = before.splitlines() or [""], after.splitlines() or [""]
    rows: list[str] = []
    groups = list(difflib.SequenceMatcher(None, a, b, autojunk=False)
                  .get_grouped_opcodes(context))
    shown_to = 0  # index in `a` just past the last line shown
    for group in groups:
        if group[0][1] > shown_to:
            rows.append(_gap_row(group[0][1] - shown_to))
        for tag, i1, i2, j1, j2 in group:
            rows.extend(_diff_rows(tag, a, b, i1, i2, j1, j2))
        shown_to = group[-1][2]
    if shown_to < len(a):
        rows.append(_gap_row(len(a) - shown_to))
    return f'<table class="diff"><tbody>{"".join(rows)}</tbody></table>'


def _diff_rows(tag: str, a: list[str], b: list[str],
               i1: int, i2: int, j1: int, j2: int) -> list[str]:
    if tag == "equal":
        return [_diff_row("ctx", i + 1, j + 1, escape(a[i]))
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)]
    old, new = a[i1:i2], b[j1:j2]
    old_html = [f"<del>{escape(t)}</del>" if t else "" for t in old]
    new_html = [f"<ins>{escape(t)}</ins>" if t else "" for t in new]
    start = 0  # pair each old line with the next similar new line, keeping the order
    for k, line in enumerate(old):
        match = next((m for m in range(start, len(new)) if _similar(line, new[m])), None)
        if match is not None:
            old_html[k], new_html[match] = _word_diff(line, new[match])
            start = match + 1
    return ([_diff_row("del", i1 + k + 1, None, h) for k, h in enumerate(old_html)]
            + [_diff_row("add", None, j1 + k + 1, h) for k, h in enumerate(new_html)])


def _similar(old: str, new: str) -> bool:
    """Whether two lines share enough words to be shown as an edit of one another."""
    x, y = _TOKEN.findall(old), _TOKEN.findall(new)
    words = [[t for t in tokens if not t.isspace()] for tokens in (x, y)]
    return difflib.SequenceMatcher(None, *words, autojunk=False).ratio() >= 0.4


def _word_diff(old: str, new: str) -> tuple[str, str]:
    """Both sides of a changed line, with the differing words wrapped in <del> / <ins>."""
    left, right = [], []
    for equal, a_text, b_text in _word_runs(_TOKEN.findall(old), _TOKEN.findall(new)):
        if equal:
            left.append(escape(a_text))
            right.append(escape(b_text))
            continue
        if a_text:
            left.append(f'<del class="word">{escape(a_text)}</del>')
        if b_text:
            right.append(f'<ins class="word">{escape(b_text)}</ins>')
    return "".join(left), "".join(right)


def _word_runs(x: list[str], y: list[str]) -> list[tuple[bool, str, str]]:
    """(equal?, old text, new text) runs of two token lists.

    A tiny equal run between two changes (a space, a comma, a short word) is folded into
    them, so a rewritten phrase reads as one edit instead of a comb of one-word highlights.
    """
    runs: list[tuple[bool, str, str]] = []
    ops = difflib.SequenceMatcher(None, x, y, autojunk=False).get_opcodes()
    for k, (tag, i1, i2, j1, j2) in enumerate(ops):
        a_text, b_text = "".join(x[i1:i2]), "".join(y[j1:j2])
        tiny = 0 < k < len(ops) - 1 and len(a_text.strip()) <= 2
        if tag == "equal" and not tiny:
            runs.append((True, a_text, b_text))
        elif runs and not runs[-1][0]:
            _, a_prev, b_prev = runs.pop()
            runs.append((False, a_prev + a_text, b_prev + b_text))
        else:
            runs.append((False, a_text, b_text))
    return runs


def _diff_row(kind: str, old_no: int | None, new_no: int | None, code: str) -> str:
    sign = {"del": "−", "add": "+", "ctx": ""}[kind]
    return (f'<tr class="d-{kind}"><td class="ln">{old_no or ""}</td>'
            f'<td class="ln">{new_no or ""}</td><td class="sign">{sign}</td>'
            f'<td class="code">{code}</td></tr>')


def _gap_row(n: int) -> str:
    noun = "line" if n == 1 else "lines"
    return (f'<tr class="d-gap"><td class="ln"></td><td class="ln"></td><td class="sign">'
            f'</td><td class="code">⋯ {n} unchanged {noun}</td></tr>')
