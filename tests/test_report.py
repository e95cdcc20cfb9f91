"""The HTML run report: real content from a real ledger, escaped, well formed, self-contained.

The page is parsed into a small tree (which also proves every tag is closed where it should
be) and asserted on by section, so a score in the wrong step or a diff on the wrong side
fails. The last test opens the page in headless Chromium, to prove a browser builds the same
structure from it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from textprop.ledger import CandidateRow, EvaluationRow, Ledger, LossRow, Revision, StepRecord
from textprop.report import diff_table, line_chart, render_report, write_report
from textprop.report.chart import Series, y_domain

from .executables import require_executable

T0 = 1_764_201_600.0  # 2025-11-27 00:00 UTC
SCRIPT = "<script>alert(1)</script>"
P0 = "Answer the question.\nThink step by step.\nEnd with <ANSWER>n</ANSWER>."
P1 = ("Answer the counting question.\nThink step by step.\n"
      "List each item with its quantity before adding.\nEnd with <ANSWER>n</ANSWER>.")
P2 = "Just count.\nEnd with <ANSWER>n</ANSWER>."
P3 = ("Answer the counting question.\nThink step by step.\n"
      f"List each item with its quantity before adding.\nIgnore any {SCRIPT} in the input.\n"
      "End with <ANSWER>n</ANSWER>.")
FMT = "Reply in <ANSWER> tags."


# --- a tiny DOM --------------------------------------------------------------------------
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def iter(self):
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str
                 ) -> list[Node]:
        return [n for n in self.iter()
                if (tag is None or n.tag == tag) and (cls is None or cls in n.classes())
                and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def one(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, cls, **attrs)
        assert len(found) == 1, f"expected one <{tag} class={cls} {attrs}>, found {len(found)}"
        return found[0]


class TreeBuilder(HTMLParser):
    """Builds a Node tree and fails on any end tag that does not close the open element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        open_tag = self.stack[-1].tag
        assert tag == open_tag, f"</{tag}> closes <{open_tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(page: str) -> Node:
    builder = TreeBuilder()
    builder.feed(page)
    builder.close()
    assert [n.tag for n in builder.stack] == ["#document"], "unclosed elements at the end"
    return builder.root


def squash(text: str) -> str:
    return " ".join(text.split())


# --- the run ---------------------------------------------------------------------------------
def call(role: str, tin: int, tout: int, cost: float, latency: float, cached: bool = False
         ) -> dict[str, object]:
    return dict(role=role, engine="scripted", input_tokens=tin, output_tokens=tout,
                cost_usd=cost, latency_s=latency, cached=cached)


def build_run(run_dir: Path) -> None:
    ledger = Ledger.in_run(run_dir)
    ledger.set_meta(name="counting-run", task=f"object counting {SCRIPT}",
                    engines={"forward": "scripted:fast", "backward": "scripted:<big>"},
                    started_at=T0, status="finished", seed=7)
    steps = [
        StepRecord(step=0, epoch=0, status="baseline", reason="Baseline evaluation.",
                   values={"system_prompt": P0, "format": FMT}, optimizer_state={},
                   val_score=0.412, test_score=0.405, best_val_score=0.412,
                   evaluations=[EvaluationRow("val", 0.412, {"v1": 0.0, "v2": 1.0}),
                                EvaluationRow("test", 0.405, {"t1": 1.0, "t2": 0.0,
                                                              "t3": 0.0})],
                   calls=[call("forward", 100, 20, 0.001, 0.5),
                          call("forward", 100, 20, 0.0, 0.0, cached=True)]),
        StepRecord(step=1, epoch=1, status="accepted", reason="Validation 0.412 -> 0.587.",
                   values={"system_prompt": P1, "format": FMT}, optimizer_state={},
                   batch=["ex-1", "ex-2"], batch_score=0.25, val_score=0.587,
                   test_score=0.561, best_val_score=0.587,
                   revisions=[Revision("system_prompt", "the <system> prompt", P0, P1,
                                       "Say it is a counting task; list items first.",
                                       "updated"),
                              Revision("format", "answer format", FMT, FMT, "",
                                       "no_feedback")],
                   losses=[LossRow("ex-1", f"I count 3 {SCRIPT}", "4", 0.0,
                                   "Missed the <two> lamps."),
                           LossRow("ex-2", "Answer: 5", "5", 0.5, "Right number, bad format.")],
                   calls=[call("forward", 120, 30, 0.0012, 0.6),
                          call("backward", 400, 80, 0.01, 2.0),
                          call("optimizer", 900, 150, 0.02, 3.5)]),
        StepRecord(step=2, epoch=1, status="rejected",
                   reason="Validation fell to 0.533; proposal discarded.",
                   values={"system_prompt": P1, "format": FMT}, optimizer_state={},
                   batch=["ex-3"], batch_score=0.5, val_score=0.533, best_val_score=0.587,
                   revisions=[Revision("system_prompt", "the <system> prompt", P1, P2,
                                       "Be shorter.", "updated")],
                   losses=[LossRow("ex-3", "6", "6", 1.0, "Correct.")],
                   calls=[call("forward", 120, 30, 0.0012, 0.6),
                          call("backward", 410, 90, 0.011, 2.5),
                          call("optimizer", 950, 160, 0.021, 3.0)]),
        StepRecord(step=3, epoch=1, status="accepted", reason="Validation 0.587 -> 0.633.",
                   values={"system_prompt": P3, "format": FMT}, optimizer_state={},
                   batch=["ex-4"], batch_score=0.75, val_score=0.633, test_score=0.598,
                   best_val_score=0.633,
                   revisions=[Revision("system_prompt", "the <system> prompt", P1, P3,
                                       f"Tell it to ignore {SCRIPT} in inputs.", "updated")],
                   losses=[LossRow("ex-4", "7", "7", 1.0, "Correct.")],
                   calls=[call("forward", 120, 30, 0.0, 0.0, cached=True),
                          call("backward", 420, 100, 0.012, 3.0),
                          call("optimizer", 1000, 170, 0.022, 4.0)]),
    ]
    for i, record in enumerate(steps):
        record.started_at, record.finished_at = T0 + 60 * i, T0 + 60 * i + 12.5
        ledger.record_step(record)
    # what the trainer writes at the end: the test score of the values in force
    ledger.set_meta(final={"test_score": 0.611, "best_val_score": 0.633,
                           "values": {"system_prompt": P3, "format": FMT}})
    ledger.close()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    build_run(tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def page(run_dir: Path) -> str:
    ledger = Ledger.in_run(run_dir)
    try:
        return render_report(ledger)
    finally:
        ledger.close()


@pytest.fixture
def dom(page: str) -> Node:
    return parse(page)


# --- page ------------------------------------------------------------------------------------
def test_page_is_well_formed_and_self_contained(page: str, dom: Node) -> None:
    for tag in ("html", "head", "body", "main", "style"):
        assert len(dom.find_all(tag)) == 1, tag
    assert dom.one("head").one("title").text() == "counting-run — textprop report"
    lowered = page.lower()
    for external in ("<script", "<link", "<img", "<iframe", "src=", "@import", "url(",
                     'href="http', "href='http"):
        assert external not in lowered, external


def test_header_shows_run_meta_and_baseline_to_best(dom: Node) -> None:
    assert dom.one("h1").text() == "counting-run"
    facts = {squash(f.one("dt").text()): squash(f.one("dd").text())
             for f in dom.find_all("div", "fact")}
    assert facts == {"Task": f"object counting {SCRIPT}",
                     "Engines": "forward scripted:fast backward scripted:<big>",
                     "Started": "2025-11-27 00:00 UTC", "Status": "finished", "Steps": "3"}
    settings = dom.one("details", "settings")
    assert "seed" in settings.text() and "7" in settings.text()
    assert "final" not in settings.text()  # shown as the test score, not as a JSON blob
    kpis = {squash(k.one(cls="kpi-label").text()): squash(k.one(cls="kpi-value").text())
            for k in dom.find_all("div", "kpi")}
    assert kpis["Validation"] == "0.412 → 0.633 +0.221"
    assert kpis["Test"] == "0.405 → 0.611 +0.206"  # the run's final test, from meta
    assert kpis["Steps"] == "3"
    assert kpis["Cost"] == "$0.0994"


def test_chart_has_one_point_per_step_marked_by_status(dom: Node) -> None:
    svg = dom.one("section", id="overview").one("svg", "chart")
    val = svg.find_all("g", "point", data_series="val")
    assert [(p.attrs["data-step"], p.attrs["data-status"]) for p in val] == [
        ("0", "baseline"), ("1", "accepted"), ("2", "rejected"), ("3", "accepted")]
    assert [p.attrs["data-step"] for p in svg.find_all("g", "point", data_series="batch")] == [
        "1", "2", "3"]
    assert [p.attrs["data-step"] for p in svg.find_all("g", "point", data_series="test")] == [
        "0", "1", "3"]  # the rejected step has no test score: no point, not a zero
    assert len(svg.find_all("polyline", data_series="test")) == 1  # sparse: bridged
    accepted, rejected = val[1], val[2]
    assert accepted.one("circle").attrs["fill"] != "#ffffff"
    assert rejected.one("circle").attrs["fill"] == "#ffffff" and rejected.find_all("path")
    heights = {p.attrs["data-step"]: float(p.one("circle").attrs["cy"]) for p in val}
    assert heights["0"] > heights["2"] > heights["1"] > heights["3"]  # higher score, higher up
    labels = [t.text() for t in svg.find_all("text", "axis-label")]
    assert labels == ["Step", "Score"]
    assert "Step 2 · validation 0.533 · rejected" in [t.text() for t in svg.find_all("title")]


def test_steps_show_status_badge_reason_and_scores(dom: Node) -> None:
    expected = {0: ("baseline", "Baseline evaluation.", "Batch — Validation 0.412 · n=2 "
                    "Test 0.405 · n=3"),
                1: ("accepted", "Validation 0.412 -> 0.587.",
                    "Batch 0.250 Validation 0.587 +0.175 vs best 0.412 Test 0.561"),
                2: ("rejected", "Validation fell to 0.533; proposal discarded.",
                    "Batch 0.500 Validation 0.533 −0.054 vs best 0.587 Test —"),
                3: ("accepted", "Validation 0.587 -> 0.633.",
                    "Batch 0.750 Validation 0.633 +0.046 vs best 0.587 Test 0.598")}
    for n, (status, reason, scores) in expected.items():
        section = dom.one("section", id=f"step-{n}")
        assert f"step-{status}" in section.classes()
        assert section.one("header", "step-head").one(cls="badge").text() == status
        assert section.one("p", "reason").text() == reason
        assert squash(section.one("div", "scores").text()) == scores


def test_diff_marks_inserted_and_deleted_text(dom: Node) -> None:
    step1 = dom.one("section", id="step-1")
    prompt = step1.find_all("div", "param")[0]
    rows = prompt.one("table", "diff").find_all("tr")
    kinds = [r.attrs["class"] for r in rows]
    assert kinds == ["d-del", "d-add", "d-ctx", "d-add", "d-ctx"]
    assert [i.text().strip() for i in rows[1].find_all("ins")] == ["counting"]
    assert rows[0].find_all("del") == []  # "the question" lost nothing, only gained a word
    assert rows[3].one("ins").text() == "List each item with its quantity before adding."
    assert rows[4].one(cls="code").text() == "End with <ANSWER>n</ANSWER>."
    line_numbers = [(r.find_all("td")[0].text(), r.find_all("td")[1].text()) for r in rows]
    assert line_numbers == [("1", ""), ("", "1"), ("2", "2"), ("", "3"), ("3", "4")]
    unchanged = step1.find_all("div", "param")[1]
    assert unchanged.find_all("table") == [] and "no change" in unchanged.text()

    step2 = dom.one("section", id="step-2")
    assert "proposal, not applied" in step2.text()
    deleted = [d.text() for d in step2.one("table", "diff").find_all("del")]
    assert "List each item with its quantity before adding." in deleted
    assert [i.text() for i in step2.one("table", "diff").find_all("ins")] == ["Just count."]


def test_net_change_diffs_baseline_against_best_step(dom: Node) -> None:
    net = dom.one("section", id="net-change")
    assert "step 3" in net.text()
    added = [r.one(cls="code").text() for r in net.find_all("tr", "d-add")]
    assert added[-1] == f"Ignore any {SCRIPT} in the input."
    assert "no change" in net.find_all("div", "param")[1].text()


def test_feedback_is_collapsible_and_losses_are_tabulated(dom: Node) -> None:
    step1 = dom.one("section", id="step-1")
    feedback = step1.one("details", "feedback")
    assert "open" not in feedback.attrs
    assert feedback.one(cls="feedback-body").text() == (
        "Say it is a counting task; list items first.")
    table = step1.one("table", "losses")
    head = [squash(th.text()) for th in table.find_all("th")]
    assert head == ["Example", "Score", "Prediction", "Target", "Explanation"]
    rows = [[squash(td.text()) for td in tr.find_all("td")]
            for tr in table.one("tbody").find_all("tr")]
    assert rows == [["ex-1", "0.00", f"I count 3 {SCRIPT}", "4", "Missed the <two> lamps."],
                    ["ex-2", "0.50", "Answer: 5", "5", "Right number, bad format."]]
    assert "mean 0.250" in step1.one("div", "losses").one("h4").text()
    assert dom.one("section", id="step-0").find_all("table", "losses") == []


def test_usage_table_has_a_row_per_role_and_a_total(dom: Node) -> None:
    table = dom.one("section", id="usage").one("table", "usage")
    rows = {squash(tr.find_all("td")[0].text()): [squash(td.text()) for td in
                                                  tr.find_all("td")[1:]]
            for tr in table.find_all("tr") if tr.find_all("td")}
    assert rows["forward"] == ["5", "2 (40%)", "560", "130", "$0.0034", "1.7 s", "0.3 s"]
    assert rows["optimizer"] == ["3", "0 (0%)", "2,850", "480", "$0.0630", "10.5 s", "3.5 s"]
    assert rows["backward"] == ["3", "0 (0%)", "1,230", "270", "$0.0330", "7.5 s", "2.5 s"]
    assert rows["Total"] == ["11", "2 (18%)", "4,640", "880", "$0.0994", "19.7 s", "1.8 s"]


def test_text_from_the_ledger_is_escaped(page: str, dom: Node) -> None:
    assert SCRIPT not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert dom.find_all("script") == [] and dom.find_all("answer") == []
    assert dom.find_all("system") == [] and dom.find_all("big") == []
    step3 = dom.one("section", id="step-3")
    assert f"Ignore any {SCRIPT} in the input." in step3.one("table", "diff").text()
    assert step3.one(cls="feedback-body").text() == f"Tell it to ignore {SCRIPT} in inputs."
    assert step3.one(cls="role").text() == "the <system> prompt"


def test_write_report_writes_next_to_the_ledger_or_where_asked(run_dir: Path,
                                                               tmp_path: Path) -> None:
    default = write_report(run_dir)
    assert default == run_dir / "report.html"
    assert "counting-run" in default.read_text(encoding="utf-8")
    custom = write_report(run_dir, tmp_path / "out" / "r.html")
    assert custom == tmp_path / "out" / "r.html"
    assert custom.read_text(encoding="utf-8") == default.read_text(encoding="utf-8")


def test_write_report_refuses_a_directory_without_a_ledger(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no run ledger"):
        write_report(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_an_empty_ledger_renders_a_page_saying_so(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "fresh" / Ledger.FILE_NAME)
    try:
        dom = parse(render_report(ledger))
    finally:
        ledger.close()
    assert dom.one("h1").text() == "fresh"
    assert "No steps recorded yet." in dom.one("section", id="steps").text()
    assert dom.find_all("svg") == []


def test_best_is_the_last_kept_step_and_the_status_comes_from_the_steps(tmp_path: Path
                                                                         ) -> None:
    """Trainer semantics: an accepted non-inferior proposal becomes the score to beat; a
    skipped step has no validation score; a run left pending awaits approval."""
    ledger = Ledger(tmp_path / "r" / Ledger.FILE_NAME)
    rows = [(0, "baseline", None, 0.5, 0.5), (1, "accepted", 0.5, 0.6, 0.6),
            (2, "accepted", 0.25, 0.58, 0.58), (3, "skipped", 1.0, None, 0.58),
            (4, "pending", 0.75, 0.7, 0.58)]
    for n, status, batch, val, best in rows:
        prompt = f"prompt {min(n, 2)}"
        ledger.record_step(StepRecord(
            step=n, epoch=0, status=status, reason=f"why {n}", optimizer_state={},
            values={"p": "prompt 4" if n == 4 else prompt}, batch_score=batch, val_score=val,
            best_val_score=best,
            revisions=[] if n == 0 else [Revision("p", "", f"prompt {min(n - 1, 2)}",
                                                  "prompt 4" if n == 4 else prompt, "fb",
                                                  "updated")],
            calls=[call("forward", 1, 1, 0.0, 0.1) | {"engine": "scripted:a"},
                   call("backward", 1, 1, 0.0, 0.1) | {"engine": "scripted:b"}]))
    try:
        dom = parse(render_report(ledger))
    finally:
        ledger.close()
    facts = {squash(f.one("dt").text()): squash(f.one("dd").text())
             for f in dom.find_all("div", "fact")}
    assert facts["Status"] == "awaiting_approval"
    assert facts["Engines"] == "forward scripted:a backward scripted:b"
    validation = dom.find_all("div", "kpi")[0]
    assert squash(validation.one(cls="kpi-value").text()) == "0.500 → 0.580 +0.080"
    assert "best at step 2" in squash(validation.text())
    assert "step 2" in dom.one("section", id="net-change").one("p", "lede").text()
    svg = dom.one("svg", "chart")
    assert [g.attrs["data-step"] for g in svg.find_all("g", "point", data_series="val")] == [
        "0", "1", "2", "4"]
    assert len(svg.find_all("polyline", data_series="val")) == 1
    step4 = dom.one("section", id="step-4")
    assert "+0.120 vs best 0.580" in squash(step4.text())  # vs the score to beat
    assert "proposal, awaiting decision" in step4.text()
    assert "no change" in dom.one("section", id="step-3").text()


# --- the pieces ------------------------------------------------------------------------------
def test_diff_table_folds_long_unchanged_runs() -> None:
    before = "\n".join(f"line {i}" for i in range(1, 21))
    after = before.replace("line 10", "line ten")
    rows = parse(diff_table(before, after, context=2)).find_all("tr")
    kinds = [r.attrs["class"] for r in rows]
    assert kinds == ["d-gap", "d-ctx", "d-ctx", "d-del", "d-add", "d-ctx", "d-ctx", "d-gap"]
    assert squash(rows[0].text()) == "⋯ 7 unchanged lines"
    assert squash(rows[-1].text()) == "⋯ 8 unchanged lines"
    assert rows[3].one("del").text() == "10" and rows[4].one("ins").text() == "ten"
    assert "No change" in diff_table("same", "same")


def test_a_changed_line_is_paired_with_its_counterpart_not_its_neighbour() -> None:
    rows = parse(diff_table("Count the items.", "A new first line.\nCount the items twice.")
                 ).find_all("tr")
    assert [r.attrs["class"] for r in rows] == ["d-del", "d-add", "d-add"]
    assert rows[1].one("ins").text() == "A new first line."  # unpaired: the whole line
    assert rows[2].one("ins").text().strip() == "twice"  # paired: only the new word
    assert rows[0].find_all("del") == []


def test_word_diff_reads_a_rewritten_phrase_as_one_edit() -> None:
    rows = parse(diff_table("keep the items, and add them up.",
                            "keep the items; then say why.")).find_all("tr")
    assert [d.text() for d in rows[0].find_all("del")] == [", and add them up"]
    assert [i.text() for i in rows[1].find_all("ins")] == ["; then say why"]


def test_line_chart_breaks_the_line_at_missing_values() -> None:
    svg = parse(line_chart([0, 1, 2, 3, 4], [
        Series("s", "s", [0.1, 0.2, None, 0.4, 0.5], "#000")]))
    assert len(svg.find_all("polyline")) == 2
    assert len(svg.find_all("g", "point")) == 4
    with pytest.raises(ValueError, match="3 values for 2 xs"):
        line_chart([0, 1], [Series("s", "s", [0.1, 0.2, 0.3], "#000")])


def test_y_domain_keeps_scores_on_a_zero_to_one_axis_and_rounds_others() -> None:
    assert y_domain([0.4, None, 0.6]) == (0.0, 1.0)
    assert y_domain([]) == (0.0, 1.0)
    assert y_domain([3.0, 17.0]) == (0.0, 20.0)
    assert y_domain([-0.5, 0.5]) == (-0.6, 0.6)


# --- a real browser --------------------------------------------------------------------------
def chromium_dom(report: Path, profile: Path) -> Node:
    """The DOM headless Chromium builds from the page (it fails on any page error)."""
    result = subprocess.run(
        [require_executable("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Uncaught" not in result.stderr, result.stderr[-2000:]
    return parse(result.stdout)


def test_chromium_renders_the_chart_and_every_step(run_dir: Path, tmp_path: Path) -> None:
    dom = chromium_dom(write_report(run_dir), tmp_path / "profile")
    svg = dom.one("svg", "chart")
    assert len(svg.find_all("g", "point", data_series="val")) == 4
    for n, status in enumerate(["baseline", "accepted", "rejected", "accepted"]):
        section = dom.one("section", id=f"step-{n}")
        assert section.one("header", "step-head").one(cls="badge").text() == status
    assert len(dom.one("section", id="step-2").find_all("table", "diff")) == 1
    assert dom.find_all("script") == []


# --- a search's candidates -------------------------------------------------------------------
S0 = "Count the items."
S1 = "Count the items.\nList each item before adding."
S1B = "Count every item twice."
S5 = f"Count the items.\nList each item before adding.\nIgnore any {SCRIPT} in the input."
F3 = "Reply with a number."
F4 = "Reply in <ANSWER> tags, nothing else."
SEARCH_VAL = ["v1", "v2", "v3", "v4"]
HELD = ["h1", "h2"]


def per_example(*scores: float) -> dict[str, float]:
    return dict(zip(SEARCH_VAL, scores, strict=True))


def build_search_run(run_dir: Path) -> None:
    """A pareto run: mutations (one outscored sibling, one rejected), a skipped step, a merge
    of 5 and 4, a duplicate and an unchanged child, and a final pick (5) that is not the top
    candidate by search validation (6), as the held-back examples decided."""
    ledger = Ledger.in_run(run_dir)
    ledger.set_meta(name="search-run", task="object counting", started_at=T0,
                    engines={"forward": "scripted"}, status="finished",
                    strategy={"kind": "pareto", "max_proposals": 7})

    def cand(id: int, step: int, parents: list[int], origin: str, values: dict[str, str],
             status: str, reason: str, val: dict[str, float] | None = None, **kw: object
             ) -> CandidateRow:
        return CandidateRow(id=id, step=step, parents=parents, origin=origin, values=values,
                            status=status, reason=reason, val_per_example=val,
                            val_score=None if val is None else sum(val.values()) / len(val),
                            **kw)

    base = {"system_prompt": S0, "format": FMT}
    c = {
        0: cand(0, 0, [], "seed", base, "seed", "the starting values", per_example(0, 1, 0, 0)),
        1: cand(1, 1, [0], "mutation", {**base, "system_prompt": S1}, "accepted",
                "minibatch 0 -> 2 of 2: passed the strict gate; validation 0.500",
                per_example(1, 1, 0, 0), changed=["system_prompt"], minibatch=["t1", "t2"],
                gate_before=0.0, gate_after=1.0,
                feedback={"system_prompt": "List the items first.", "format": ""}),
        2: cand(2, 1, [0], "mutation", {**base, "system_prompt": S1B}, "outscored",
                "passed the strict gate; child 0 scored higher", changed=["system_prompt"],
                sample=1, minibatch=["t1", "t2"], gate_before=0.0, gate_after=0.5),
        3: cand(3, 2, [0], "mutation", {**base, "format": F3}, "rejected",
                f"minibatch 1 -> 1 of 2: failed the strict gate {SCRIPT}", changed=["format"],
                minibatch=["t3", "t4"], gate_before=0.5, gate_after=0.5,
                feedback={"format": "Ask for a bare number."}),
        4: cand(4, 3, [0], "mutation", {**base, "format": F4}, "accepted",
                "passed the strict gate; validation 0.500", per_example(0, 1, 1, 0),
                changed=["format"], minibatch=["t1", "t4"], gate_before=0.0, gate_after=0.5,
                feedback={"format": "Use <ANSWER> tags."}),
        5: cand(5, 4, [1], "mutation", {**base, "system_prompt": S5}, "accepted",
                "passed the strict gate; validation 0.750", per_example(1, 1, 0, 1),
                changed=["system_prompt"], minibatch=["t2", "t3"], gate_before=0.5,
                gate_after=1.0, feedback={"system_prompt": f"Say to ignore {SCRIPT}."}),
        6: cand(6, 6, [5, 4], "merge", {"system_prompt": S5, "format": F4}, "accepted",
                "merge of 5 and 4 over ancestor 0 (system_prompt from 5, format from 4)",
                per_example(1, 1, 1, 1), changed=["format", "system_prompt"],
                minibatch=["v3", "v4"], gate_before=0.5, gate_after=1.0),
        7: cand(7, 7, [6], "mutation", {"system_prompt": S1, "format": F4}, "duplicate",
                "the same values as an earlier candidate", changed=["system_prompt"],
                minibatch=["t1", "t2"], gate_before=0.5),
        8: cand(8, 7, [6], "mutation", {"system_prompt": S5, "format": F4}, "unchanged",
                "system_prompt: no change", sample=1, minibatch=["t1", "t2"],
                gate_before=0.5),
    }
    final = {"pick": 5, "rule": "the best of the top 3 by validation over all 6 validation "
                                 "examples, 2 of them held back from the search",
             "candidates": [
                 {"id": 6, "search_val": 1.0, "holdout": 0.0, "full_val": 4 / 6,
                  "holdout_per_example": {"h1": 0.0, "h2": 0.0}},
                 {"id": 5, "search_val": 0.75, "holdout": 1.0, "full_val": 5 / 6,
                  "holdout_per_example": {"h1": 1.0, "h2": 1.0}},
                 {"id": 1, "search_val": 0.5, "holdout": 0.5, "full_val": 0.5,
                  "holdout_per_example": {"h1": 1.0, "h2": 0.0}}]}
    # (step, status, candidates, best candidate after it, search state)
    plan = [(0, "baseline", [0], 0, {"holdout": HELD}), (1, "accepted", [1, 2], 1,
                                                          {"parent": 0}),
            (2, "rejected", [3], 1, {"parent": 0}), (3, "accepted", [4], 1, {"parent": 0}),
            (4, "accepted", [5], 5, {"parent": 1}), (5, "skipped", [], 5, {"parent": 5}),
            (6, "accepted", [6], 6, {"merge": [5, 4, 0]}),
            (7, "rejected", [7, 8], 6, {"parent": 6})]
    records = []
    for n, status, ids, best, state in plan:
        made = [c[i] for i in ids]
        kept = next((m for m in made if m.status in ("seed", "accepted")), None)
        val = (kept.val_per_example | ({"h1": 0.0, "h2": 0.0} if n == 0 else {})
               if kept else None)
        first = made[0] if made and made[0].parents else None
        parent = c[first.parents[0]] if first else None
        revisions = [Revision(name, "", parent.values[name], first.values[name],
                              first.feedback.get(name, ""), "updated" if name in
                              first.changed else "unchanged")
                     for name in first.values] if first and parent else []
        records.append(StepRecord(
            step=n, epoch=0, status=status, reason=f"why {n}", values=c[best].values,
            optimizer_state={}, val_score=None if val is None else sum(val.values()) / len(val),
            best_val_score=c[best].val_score, candidates=made, revisions=revisions,
            evaluations=[EvaluationRow("val", sum(val.values()) / len(val), val)] if val else [],
            search_state=state, started_at=T0 + 60 * n, finished_at=T0 + 60 * n + 5))
    records.append(StepRecord(
        step=8, epoch=0, status="final", reason="candidate 5 (validation 0.833): the best",
        values=c[5].values, optimizer_state={}, val_score=5 / 6, best_val_score=5 / 6,
        search_state={"final": final}, started_at=T0 + 480, finished_at=T0 + 485))
    ledger.record_steps(records)
    ledger.set_meta(final={"test_score": 0.9, "best_val_score": 5 / 6, "values": c[5].values})
    ledger.close()


@pytest.fixture
def search_dir(tmp_path: Path) -> Path:
    build_search_run(tmp_path / "search")
    return tmp_path / "search"


@pytest.fixture
def search_page(search_dir: Path) -> str:
    ledger = Ledger.in_run(search_dir)
    try:
        return render_report(ledger)
    finally:
        ledger.close()


@pytest.fixture
def search_dom(search_page: str) -> Node:
    return parse(search_page)


def test_a_run_without_candidates_has_no_search_section(page: str, dom: Node) -> None:
    assert dom.find_all("section", id="search") == []
    nav = dom.one("nav", "sections")
    assert [a.attrs["href"] for a in nav.find_all("a")] == [
        "#overview", "#net-change", "#steps", "#usage"]
    assert dom.find_all("svg", "lineage") == [] and dom.find_all(cls="step-cands") == []
    for absent in ("cand-", "details.candidate", "table.heat", "Lineage"):
        assert absent not in page, absent


def test_search_section_sums_up_the_candidates_and_the_pick(search_dom: Node) -> None:
    nav = search_dom.one("nav", "sections")
    assert [a.attrs["href"] for a in nav.find_all("a")] == [
        "#overview", "#net-change", "#search", "#steps", "#usage"]
    lede = squash(search_dom.one("section", id="search").one("p", "lede").text())
    assert lede.startswith("8 candidates from 7 proposals: 4 accepted, 1 duplicate, "
                           "1 outscored, 1 rejected, 1 unchanged. Final pick: #5, the best")
    # the final pick is the values in force: the overview and net change end at its step
    kpi = search_dom.find_all("div", "kpi")[0]
    assert squash(kpi.one(cls="kpi-value").text()) == "0.167 → 0.833 +0.667"
    assert "best at step 8" in squash(kpi.text())
    assert "step 8" in search_dom.one("section", id="net-change").one("p", "lede").text()


def test_lineage_has_a_node_per_candidate_and_an_edge_per_parent_link(search_dom: Node
                                                                       ) -> None:
    svg = search_dom.one("section", id="search").one("svg", "lineage")
    nodes = svg.find_all("g", "node")
    # depth first from the seed, children by id: each subtree sits under its parent
    assert [n.attrs["data-id"] for n in nodes] == ["0", "1", "5", "6", "7", "8", "2", "3", "4"]
    status = {n.attrs["data-id"]: n.attrs["data-status"] for n in nodes}
    assert status == {"0": "seed", "1": "accepted", "2": "outscored", "3": "rejected",
                      "4": "accepted", "5": "accepted", "6": "accepted", "7": "duplicate",
                      "8": "unchanged"}
    assert {n.attrs["data-id"]: n.attrs["data-origin"] for n in nodes if
            n.attrs["data-origin"] != "mutation"} == {"0": "seed", "6": "merge"}
    edges = {(e.attrs["data-from"], e.attrs["data-to"]) for e in svg.find_all("path", "edge")}
    assert edges == {("0", "1"), ("0", "2"), ("0", "3"), ("0", "4"), ("1", "5"), ("5", "6"),
                     ("4", "6"), ("6", "7"), ("6", "8")}
    assert [(e.attrs["data-from"], e.attrs["data-to"])
            for e in svg.find_all("path", "edge-merge")] == [("4", "6")]  # the 2nd parent
    # pool members are drawn in full; the others recede, a rejected one with a cross
    dimmed = {n.attrs["data-id"] for n in nodes if n.attrs.get("opacity")}
    assert dimmed == {"2", "3", "7", "8"}
    by_id = {n.attrs["data-id"]: n for n in nodes}
    assert by_id["4"].one("circle").attrs["fill"] != "#ffffff"
    assert by_id["3"].one("circle").attrs["fill"] == "#ffffff" and by_id["3"].find_all("path")
    assert by_id["6"].find_all("path") and not by_id["6"].find_all("circle")  # a diamond
    assert by_id["0"].find_all("rect")  # the seed's square
    # the final pick is highlighted; the last front is marked
    texts = {i: [t.text() for t in n.find_all("text")] for i, n in by_id.items()}
    assert "★ final pick" in texts["5"] and "on the front" in texts["6"]
    assert not any("final pick" in t for i, ts in texts.items() if i != "5" for t in ts)
    assert len(svg.find_all("rect", "pick-row")) == 1
    assert texts["6"][:4] == ["#6", "merge", "accepted", "1.000"]
    assert texts["3"][:4] == ["#3", "mutation", "rejected", "—"]
    links = [a.attrs["href"] for a in svg.find_all("a")]
    assert links == [f"#cand-{n.attrs['data-id']}" for n in nodes]
    for href in links:
        search_dom.one("details", id=href[1:])


def test_front_over_time_counts_the_non_dominated_candidates_per_step(search_dom: Node
                                                                      ) -> None:
    charts = search_dom.one("section", id="search").one(cls="front-charts")

    def points(cls: str, series: str) -> list[tuple[str, str]]:
        svg = charts.one("figure", cls).one("svg", "chart")
        return [(p.attrs["data-step"], p.attrs["data-value"])
                for p in svg.find_all("g", "point", data_series=series)]

    # the front: {0}; {1} dominates the seed; 4 leads v3 (step 3); 5 takes over from 1
    # (step 4); the merge 6 leads everywhere (step 6). The final step re-scores, no more.
    assert points("front-size", "front") == [
        ("0", "1"), ("1", "1"), ("2", "1"), ("3", "2"), ("4", "2"), ("5", "2"), ("6", "1"),
        ("7", "1")]
    assert points("front-best", "best") == [
        ("0", "0.25"), ("1", "0.5"), ("2", "0.5"), ("3", "0.5"), ("4", "0.75"), ("5", "0.75"),
        ("6", "1"), ("7", "1")]
    size_svg = charts.one("figure", "front-size").one("svg")
    assert "Step 3 · non-dominated candidates 2" in [t.text() for t in
                                                      size_svg.find_all("title")]


def heat_rows(dom: Node) -> dict[str, dict[str, str]]:
    table = dom.one("section", id="search").one("table", "heat")
    return {tr.attrs["data-candidate"]: {td.attrs["data-example"]: td.text()
                                         for td in tr.find_all("td", "ex")}
            for tr in table.one("tbody").find_all("tr")}


def test_per_example_table_shows_the_best_candidates_and_the_pick(search_dom: Node,
                                                                  search_dir: Path,
                                                                  monkeypatch) -> None:
    table = search_dom.one("section", id="search").one("table", "heat")
    head = [squash(th.text()) for th in table.one("thead").find_all("th")]
    assert head == ["Candidate", "Search", "Held back", "All", *SEARCH_VAL, *HELD]
    rows = heat_rows(search_dom)
    assert list(rows) == ["6", "5", "1", "4", "0"]  # by validation, ties to the older
    assert rows["6"] == {"v1": "1", "v2": "1", "v3": "1", "v4": "1", "h1": "0", "h2": "0"}
    assert rows["5"] == {"v1": "1", "v2": "1", "v3": "0", "v4": "1", "h1": "1", "h2": "1"}
    assert rows["4"] == {"v1": "0", "v2": "1", "v3": "1", "v4": "0", "h1": "·", "h2": "·"}
    body = table.one("tbody").find_all("tr")
    assert [tr.attrs.get("class") for tr in body] == [None, "pick", None, None, None]
    assert "final pick" in body[1].text() and "final pick" not in body[0].text()
    assert [squash(td.text()) for td in body[1].find_all("td")[:4]] == [
        "#5 mutation ★ final pick", "0.750", "1.000", "0.833"]
    cell = body[0].find_all("td", "ex")[4]
    assert "ex-bad" in cell.classes() and "held-first" in cell.classes()
    assert "ex-good" in body[0].find_all("td", "ex")[0].classes()
    foot = [td.text() for td in table.one("tfoot").find_all("td", "ex")]
    assert foot == ["1", "1", "1", "1", "1", "1"]  # every example is solved by someone

    monkeypatch.setattr("textprop.report.html.TOP_CANDIDATES", 1)
    ledger = Ledger.in_run(search_dir)
    try:
        fewer = parse(render_report(ledger))
    finally:
        ledger.close()
    assert list(heat_rows(fewer)) == ["6", "5"]  # the top one, and the pick besides


def test_each_candidate_has_a_collapsed_diff_against_its_parent(search_dom: Node) -> None:
    details = search_dom.one("section", id="search").find_all("details", "candidate")
    assert [d.attrs["id"] for d in details] == [f"cand-{i}" for i in range(9)]
    assert not any("open" in d.attrs for d in details)
    by_id = {d.attrs["data-id"]: d for d in details}
    assert "cand-pick" in by_id["5"].classes()
    summary = squash(by_id["5"].find_all("summary")[0].text())
    assert summary == ("#5 accepted mutation · from #1 · step 4 · gate 0.500 → 1.000 "
                       "validation 0.750 ★ final pick")
    five = by_id["5"]
    assert five.one("p", "reason").text() == "passed the strict gate; validation 0.750"
    assert [r.one(cls="code").text() for r in five.find_all("tr", "d-add")] == [
        f"Ignore any {SCRIPT} in the input."]
    assert [p.one(cls="param-name").text() for p in five.find_all("div", "param")] == [
        "system_prompt"]  # format is unchanged: no diff
    assert five.one(cls="feedback-body").text() == f"Say to ignore {SCRIPT}."
    assert "Gated on 2 examples: t2, t3" in five.text()
    # a merge: against each parent, what it took from the other
    merge = by_id["6"]
    assert [squash(p.text()) for p in merge.find_all("p", "against")] == [
        "Against #5 (1 of 2 parameters differ)", "Against #4 (1 of 2 parameters differ)"]
    assert [p.one(cls="param-name").text() for p in merge.find_all("div", "param")] == [
        "format", "system_prompt"]
    # the seed shows its values; an unchanged child says so; empty feedback is left out
    assert [p.text() for p in by_id["0"].find_all("pre", "value")] == [S0, FMT]
    assert "Same values as its parent." in by_id["8"].text()
    assert len(by_id["1"].find_all("details", "feedback")) == 1


def test_search_steps_link_to_their_candidates_and_the_pick(search_dom: Node) -> None:
    step1 = search_dom.one("section", id="step-1").one("p", "step-cands")
    assert squash(step1.text()) == "Candidates: #1 accepted #2 outscored"
    assert [a.attrs["href"] for a in step1.find_all("a")] == ["#cand-1", "#cand-2"]
    assert search_dom.one("section", id="step-5").find_all("p", "step-cands") == []
    final = search_dom.one("section", id="step-8")
    assert squash(final.one("p", "step-cands").text()) == (
        "Final pick: #5 · compared: #6, #5, #1")
    assert "vs best" not in final.one("div", "scores").text()  # all of validation vs part
    assert "No parameter revisions" not in final.text()


def test_candidate_text_is_escaped(search_page: str, search_dom: Node) -> None:
    assert SCRIPT not in search_page
    lowered = search_page.lower()
    for external in ("<script", "<link", "<img", "src=", "url(", 'href="http'):
        assert external not in lowered, external
    assert search_dom.find_all("script") == [] and search_dom.find_all("answer") == []
    svg = search_dom.one("svg", "lineage")
    titles = [t.text() for t in svg.find_all("title")]
    assert any(t.endswith(f"failed the strict gate {SCRIPT}") for t in titles)
    assert search_dom.one("details", id="cand-3").one("p", "reason").text().endswith(SCRIPT)


def test_a_pending_pick_is_marked_as_awaiting_approval(search_dir: Path) -> None:
    ledger = Ledger.in_run(search_dir)
    try:
        ledger.update_step_status(8, "pending", "awaits a reviewer")
        dom = parse(render_report(ledger))
    finally:
        ledger.close()
    node = dom.one("svg", "lineage").one("g", "node", data_id="5")
    assert "★ final pick, awaiting approval" in [t.text() for t in node.find_all("text")]
    assert squash(dom.one("section", id="step-8").one("p", "step-cands").text()).startswith(
        "Final pick, awaiting approval: #5")


def test_chromium_renders_the_search_section(search_dir: Path, tmp_path: Path) -> None:
    dom = chromium_dom(write_report(search_dir), tmp_path / "profile")
    search = dom.one("section", id="search")
    assert len(search.one("svg", "lineage").find_all("g", "node")) == 9
    assert len(search.one("svg", "lineage").find_all("path", "edge")) == 9
    assert len(search.find_all("svg", "chart")) == 2
    assert list(heat_rows(dom)) == ["6", "5", "1", "4", "0"]
    assert len(search.find_all("details", "candidate")) == 9
    assert dom.find_all("script") == []
