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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from textprop import __version__
from textprop.engines.registry import public_spec
from textprop.ledger import CandidateRow, Ledger
from textprop.report.chart import Frame, Series, line_chart, nice_step
from textprop.report.lineage import lineage_tree
from textprop.train.strategies.pool import Candidate, Pool

KEPT = ("baseline", "accepted", "final")  # statuses whose values were in force afterwards
POOL = ("seed", "accepted")  # statuses of the candidates in a search's pool
TOP_CANDIDATES = 5  # rows of the per-example table, besides the final pick
_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


# --- entry points ---------------------------------------------------------------------------
def render_report(ledger: Ledger) -> str:
    """The whole page for `ledger` (deterministic: the same ledger gives the same bytes)."""
    run = _Run.load(ledger)
    fields = {
        "title": escape(f"{run.name} — textprop report"),
        "header": _header(run),
        "overview": _overview(run),
        "search": _search(run),
        "search_nav": '<a href="#search">Search</a>' if run.candidates else "",
        "search_style": _resource("search.css") if run.candidates else "",
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
    return Template(_resource("template.html"))


def _resource(name: str) -> str:
    return resources.files("textprop.report").joinpath(name).read_text("utf-8")


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
    outputs: list[dict[str, Any]] = field(default_factory=list)  # per pipeline step

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
    candidates: list[CandidateRow]  # a search's (none for tgd)

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
                best_before=_score_to_beat(steps), outputs=ledger.step_outputs(n),
                unpriced=any(c["engine"] in unpriced and not c["cached"] for c in calls)))
        engines: dict[str, list[str]] = {}
        for c in ledger.calls():
            if c["engine"] not in engines.setdefault(c["role"], []):
                engines[c["role"]].append(c["engine"])
        name = str(meta.get("name") or meta.get("run_name") or ledger.path.parent.name)
        return cls(name=name, meta=meta, steps=steps, usage=ledger.usage_by_role(),
                   engines=engines, source=ledger.path.name, candidates=ledger.candidates())

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
    def final_step(self) -> _Step | None:
        """A search's last step, the one that made the final pick (None before it)."""
        return next((s for s in reversed(self.steps) if "final" in s.row["search_state"]),
                    None)

    @property
    def final_pick(self) -> dict[str, Any] | None:
        """{"pick": id, "rule": text, "candidates": [...]} of a search's final step."""
        step = self.final_step
        return step.row["search_state"]["final"] if step else None

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


# --- a search's candidates ------------------------------------------------------------------
def _pick_note(run: _Run) -> str:
    """How the final pick stands: made, awaiting a reviewer, or rejected by one."""
    step = run.final_step
    status = step.status if step else ""
    return {"pending": "final pick, awaiting approval",
            "rejected": "final pick, rejected by a reviewer"}.get(status, "final pick")


def _pick_id(run: _Run) -> int | None:
    final = run.final_pick
    return int(final["pick"]) if final and final.get("pick") is not None else None


def _pool_at(run: _Run, step: int) -> Pool:
    """The pool as it stood after `step`: the seed and the candidates accepted so far."""
    return Pool(Candidate(c.id, c.values, c.val_per_example or {}, c.parents)
                for c in run.candidates if c.status in POOL and c.step <= step
                and c.val_per_example is not None)


def front_history(run: _Run) -> list[tuple[int, int, float | None]]:
    """(step, size of the Pareto front, best validation score) after each search step.

    The front is the pool's non-dominated candidates (`Pool.leaders`) over the search part of
    validation; the final step, which only re-scores the top candidates, is left out.
    """
    out = []
    for step in run.steps:
        if "final" in step.row["search_state"]:
            continue
        pool = _pool_at(run, step.number)
        out.append((step.number, len(pool.leaders()),
                    pool.best().score if len(pool) else None))
    return out


def _search(run: _Run) -> str:
    """The search section (lineage, front over time, per-example scores, every candidate);
    empty for a run without candidates, so a tgd run's page is as it was."""
    if not run.candidates:
        return ""
    pick, final = _pick_id(run), run.final_pick
    made = [c for c in run.candidates if c.origin != "seed"]
    counts: dict[str, int] = {}
    for c in made:
        counts[c.status] = counts.get(c.status, 0) + 1
    tally = ", ".join(f'<span class="count count-{_slug(k)}">{n} {escape(k)}</span>'
                      for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    proposals = sum(1 for s in run.steps if s.status != "baseline"
                    and "final" not in s.row["search_state"])
    lede = (f"{len(made)} candidates from {proposals} proposals"
            + (f": {tally}" if tally else "") + ".")
    if pick is not None and final:
        lede += (f' {escape(_pick_note(run)).capitalize()}: <a href="#cand-{pick}">#{pick}</a>'
                 f', {escape(str(final.get("rule", "")))}.')
    history = front_history(run)
    front = list(_pool_at(run, history[-1][0]).leaders()) if history else []
    tree = lineage_tree(run.candidates, pick=pick, pick_note=_pick_note(run), front=front)
    return (f'<section class="card" id="search"><h2>Search</h2><p class="lede">{lede}</p>'
            f'<h3 id="search-lineage">Lineage</h3><figure class="lineage-box">{tree}'
            "<figcaption>One row per candidate, under the parent it was made from; a merge's "
            "second parent is joined by a dashed line. Square: the seed, circle: a mutation, "
            "diamond: a merge. Filled: in the pool; hollow: not (a cross if rejected). Click "
            "a row for its values and feedback.</figcaption></figure>"
            f'<h3 id="search-front">Pareto front over time</h3>{_front_charts(history)}'
            f'<h3 id="search-examples">Best candidates by validation example</h3>'
            f"{_per_example(run, pick)}"
            f'<h3 id="search-candidates">Candidates</h3>{_candidates(run, pick)}</section>\n')


def _front_charts(history: list[tuple[int, int, float | None]]) -> str:
    if not history:
        return '<p class="empty">No search steps recorded yet.</p>'
    xs = [n for n, _, _ in history]
    sizes = [float(k) for _, k, _ in history]
    top = max(sizes, default=0.0)
    tick = max(1.0, nice_step(top / 5))
    y_max = max(4.0, -(-top // tick) * tick)
    frame = Frame(width=540, height=260, left=56, right=20, top=40, bottom=48)
    size_chart = line_chart(xs, [Series("front", "non-dominated candidates", sizes,
                                        "#7c3aed", dashed=False)],
                            y_label="Candidates", frame=frame, y_range=(0.0, y_max),
                            value_format=".0f")
    best_chart = line_chart(xs, [Series("best", "best validation (search part)",
                                        [b for _, _, b in history], "#4f46e5",
                                        bridge_gaps=True)],
                            y_label="Score", frame=frame)
    return ('<div class="front-charts">'
            f'<figure class="chart-box front-size">{size_chart}<figcaption>Size of the Pareto '
            "front after each step: the pool's candidates that are best on some validation "
            "example no other surviving candidate also leads.</figcaption></figure>"
            f'<figure class="chart-box front-best">{best_chart}<figcaption>Best mean '
            "validation score in the pool after each step, over the part of validation the "
            "search sees.</figcaption></figure></div>")


def _per_example(run: _Run, pick: int | None) -> str:
    """The top candidates by validation (and the final pick) against every validation
    example, held-back examples (scored only for the final candidates) last."""
    pool = [c for c in run.candidates if c.status in POOL and c.val_per_example]
    if not pool:
        return '<p class="empty">No candidate has per-example validation scores.</p>'
    ranked = sorted(pool, key=lambda c: (-_mean_of(c), c.id))
    rows = ranked[:TOP_CANDIDATES]
    rows += [c for c in ranked[TOP_CANDIDATES:] if c.id == pick]
    examples = list(dict.fromkeys(e for c in pool for e in (c.val_per_example or {})))
    final = {int(f["id"]): f for f in (run.final_pick or {}).get("candidates", [])}
    held = list(dict.fromkeys(e for f in final.values()
                              for e in (f.get("holdout_per_example") or {})))
    head = ("<tr><th>Candidate</th><th class=\"num\">Search</th>"
            + ('<th class="num">Held back</th><th class="num">All</th>' if held else "")
            + "".join(_example_head(e, "") for e in examples)
            + "".join(_example_head(e, _held(i)) for i, e in enumerate(held)) + "</tr>")
    body = []
    for c in rows:
        f = final.get(c.id, {})
        scores = c.val_per_example or {}
        held_scores = f.get("holdout_per_example") or {}
        tag = (f' <span class="pick-tag">★ {escape(_pick_note(run))}</span>'
               if c.id == pick else "")
        cells = [f'<td class="cand"><a href="#cand-{c.id}">#{c.id}</a> '
                 f'<span class="muted small">{escape(c.origin)}</span>{tag}</td>',
                 f'<td class="num">{_score(_mean_of(c))}</td>']
        if held:
            cells += [f'<td class="num">{_score(f.get("holdout"))}</td>',
                      f'<td class="num">{_score(f.get("full_val"))}</td>']
        cells += [_example_cell(c.id, e, scores.get(e), "") for e in examples]
        cells += [_example_cell(c.id, e, held_scores.get(e), _held(i))
                  for i, e in enumerate(held)]
        cls = ' class="pick"' if c.id == pick else ""
        body.append(f'<tr data-candidate="{c.id}"{cls}>{"".join(cells)}</tr>')
    best = [max((c.val_per_example or {}).get(e, 0.0) for c in pool) for e in examples]
    held_best = [max((f.get("holdout_per_example") or {}).get(e, 0.0)
                     for f in final.values()) for e in held]
    foot = ('<tr class="pool-best"><td>best in the pool</td><td></td>'
            + ("<td></td><td></td>" if held else "")
            + "".join(_example_cell(None, e, v, "") for e, v in zip(examples, best, strict=True))
            + "".join(_example_cell(None, e, v, _held(i))
                      for i, (e, v) in enumerate(zip(held, held_best, strict=True))) + "</tr>")
    shown = (f"The top {min(len(ranked), TOP_CANDIDATES)} of {len(pool)} pool candidates by "
             "validation" + (" and the final pick" if len(rows) > TOP_CANDIDATES else ""))
    note = (f"; the {len(held)} held-back examples were scored only for the final candidates"
            if held else "")
    return (f'<div class="heat-scroll"><table class="heat"><thead>{head}</thead>'
            f"<tbody>{''.join(body)}</tbody><tfoot>{foot}</tfoot></table></div>"
            f"<p class=\"caption\">{shown}, one column per validation example (1: solved, "
            f"0: not){note}. The last row is the best score any pool candidate has on the "
            "example.</p>")


def _held(index: int) -> str:
    """The class of a held-back example's column: the first one starts the group."""
    return " held held-first" if index == 0 else " held"


def _mean_of(c: CandidateRow) -> float:
    if c.val_score is not None:
        return float(c.val_score)
    scores = c.val_per_example or {}
    return sum(scores.values()) / max(len(scores), 1)


def _example_head(example: str, extra: str) -> str:
    return (f'<th class="ex{extra}" title="{escape(example)}"><span>{escape(example)}</span>'
            "</th>")


def _example_cell(candidate: int | None, example: str, v: float | None, extra: str) -> str:
    data = f' data-example="{escape(example)}"'
    if v is None:
        return f'<td class="ex ex-none{extra}"{data} title="not scored">·</td>'
    kind = "good" if v >= 0.999 else "bad" if v <= 0.001 else "partial"
    who = f"#{candidate} · " if candidate is not None else ""
    text = f"{v:.0f}" if kind != "partial" else f"{v:.2f}"
    return (f'<td class="ex ex-{kind}{extra}"{data} data-score="{v:.6g}" '
            f'title="{escape(f"{who}{example}: {v:.2f}")}">{text}</td>')


def _candidates(run: _Run, pick: int | None) -> str:
    by_id = {c.id: c for c in run.candidates}
    return "".join(_candidate(c, by_id, pick, _pick_note(run)) for c in run.candidates)


def _candidate(c: CandidateRow, by_id: dict[int, CandidateRow], pick: int | None,
               pick_note: str) -> str:
    parents = ", ".join(f'<a href="#cand-{p}">#{p}</a>' for p in c.parents)
    facts = [escape(c.origin), *([f"from {parents}"] if parents else []),
             f'<a href="#step-{c.step}">step {c.step}</a>']
    if c.gate_after is not None:
        facts.append(f"gate {_score(c.gate_before)} → {_score(c.gate_after)}")
    tag = (f'<span class="pick-tag">★ {escape(pick_note)}</span>' if c.id == pick else "")
    summary = (f'<summary><span class="cand-id">#{c.id}</span> {_badge(c.status)} '
               f'<span class="cand-facts">{" · ".join(facts)}</span> '
               f'<span class="cand-val">validation {_score(c.val_score)}</span> {tag}'
               "</summary>")
    reason = f'<p class="reason">{escape(c.reason)}</p>' if c.reason else ""
    batch = (f'<p class="cand-batch muted small">Gated on {len(c.minibatch)} examples: '
             f"{escape(', '.join(c.minibatch))}</p>" if c.minibatch else "")
    if not c.parents:
        body = _initial_values(c.values)
    else:
        body = "".join(_against(c, by_id.get(p), p, len(c.parents) > 1) for p in c.parents)
    feedback = "".join(
        f'<details class="feedback"><summary>Feedback on <code>{escape(name)}</code> '
        f'<span class="muted">({len(text.split())} words)</span></summary>'
        f'<div class="feedback-body">{escape(text.strip())}</div></details>'
        for name, text in c.feedback.items() if text.strip())
    cls = f"candidate cand-{_slug(c.status)}" + (" cand-pick" if c.id == pick else "")
    return (f'<details class="{cls}" id="cand-{c.id}" data-id="{c.id}">{summary}'
            f'<div class="cand-body">{reason}{batch}{body}{feedback}</div></details>')


def _against(c: CandidateRow, parent: CandidateRow | None, parent_id: int,
             several: bool) -> str:
    """The candidate's values diffed against one parent's, parameter by parameter."""
    if parent is None:
        return f'<p class="empty">Parent #{parent_id} is not in the ledger.</p>'
    names = list(dict.fromkeys([*parent.values, *c.values]))
    changed = [n for n in names if parent.values.get(n, "") != c.values.get(n, "")]
    head = (f'<p class="against">Against <a href="#cand-{parent_id}">#{parent_id}</a>'
            + (f' <span class="muted">({len(changed)} of {len(names)} parameters differ)'
               "</span>" if several else "") + "</p>") if several else ""
    if not changed:
        return head + '<p class="no-change">Same values as its parent.</p>'
    blocks = [f'<div class="param"><div class="param-head"><code class="param-name">'
              f"{escape(n)}</code></div>"
              f"{diff_table(parent.values.get(n, ''), c.values.get(n, ''))}</div>"
              for n in changed]
    return head + "".join(blocks)


def _step_candidates(step: _Step, candidates: list[CandidateRow], run: _Run) -> str:
    """Links from a search step to the candidates it proposed (or, last, to the pick)."""
    final = step.row["search_state"].get("final")
    if isinstance(final, dict) and final.get("pick") is not None:
        compared = ", ".join(f'<a href="#cand-{int(f["id"])}">#{int(f["id"])}</a>'
                             for f in final.get("candidates", []))
        return (f'<p class="step-cands">{escape(_pick_note(run)).capitalize()}: '
                f'<a href="#cand-{int(final["pick"])}">#{int(final["pick"])}</a>'
                + (f' <span class="muted">· compared: {compared}</span>' if compared else "")
                + "</p>")
    if not candidates:
        return ""
    links = " ".join(f'<a href="#cand-{c.id}">#{c.id}</a> {_badge(c.status)}'
                     for c in candidates)
    return f'<p class="step-cands">Candidates: {links}</p>'


# --- steps ----------------------------------------------------------------------------------
def _steps(run: _Run) -> str:
    if not run.steps:
        return '<p class="empty">No steps recorded yet.</p>'
    index = "".join(f'<a class="chip chip-{_slug(s.status)}" href="#step-{s.number}" '
                    f'title="{escape(s.status)}">{s.number}</a>' for s in run.steps)
    by_step: dict[int, list[CandidateRow]] = {}
    for c in run.candidates:
        by_step.setdefault(c.step, []).append(c)
    return (f'<nav class="step-index" aria-label="Steps">{index}</nav>'
            + "".join(_step(s, _step_candidates(s, by_step.get(s.number, []), run))
                      for s in run.steps))


def _step(step: _Step, candidates: str = "") -> str:
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
    final = "final" in row["search_state"]  # a search's final pick: it revises nothing
    body = (_initial_values(row["values"]) if step.status == "baseline" and not step.revisions
            else "".join(_revision(r, step.status) for r in step.revisions)
            or ("" if final else
                '<p class="empty">No parameter revisions recorded for this step.</p>'))
    return (f'<section class="step step-{_slug(step.status)}" id="step-{step.number}">'
            f"{head}{_step_scores(step)}{reason}{candidates}{body}{_losses(step.losses)}"
            f"{_step_outputs(step.outputs)}</section>")


def _step_scores(step: _Step) -> str:
    row = step.row
    n = {split: len(e["per_example"]) for split, e in step.evaluations.items()}
    val_n = n.get("val") or n.get("val_proposal")
    # A search's final pick is scored on all of validation, the steps before it on the
    # search's part only: the two do not compare.
    vs_best = (_delta(row["val_score"] - step.best_before, f"vs best {step.best_before:.3f}")
               if row["val_score"] is not None and step.best_before is not None
               and "final" not in row["search_state"] else "")
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


def _step_outputs(rows: list[dict[str, Any]]) -> str:
    """Per batch example, what each pipeline step was given, said and was told."""
    if not rows:
        return ""
    by_example: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_example.setdefault(r["example_id"], []).append(r)
    blocks = []
    for example, steps in by_example.items():
        body = [(f'<code>{escape(r["name"])}</code>', _cell(r["input"]), _cell(r["output"]),
                 _cell(r["feedback"])) for r in steps]
        blocks.append(f'<details class="step-outputs"><summary>Example <code>'
                      f'{escape(example)}</code> <span class="muted">{len(steps)} pipeline '
                      f'steps</span></summary>'
                      f'{_table(["Pipeline step", "Input", "Output", "Feedback"], body, "losses")}'
                      "</details>")
    return (f'<div class="losses"><h4>Pipeline steps <span class="muted">each step\'s input, '
            f'output and feedback per batch example</span></h4>{"".join(blocks)}</div>')


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
