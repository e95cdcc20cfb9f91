"""The HTML run report: real content from a real ledger, escaped, well formed, self-contained.

The page is parsed into a small tree (which also proves every tag is closed where it should
be) and asserted on by section, so a score in the wrong step or a diff on the wrong side
fails. The last test opens the page in headless Chromium, to prove a browser builds the same
structure from it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from textprop.ledger import EvaluationRow, Ledger, LossRow, Revision, StepRecord
from textprop.report import diff_table, line_chart, render_report, write_report
from textprop.report.chart import Series, y_domain

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
def chromium_or_skip() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("TEXTPROP_REQUIRE_CHROMIUM") == "1":
            pytest.fail("TEXTPROP_REQUIRE_CHROMIUM=1 but `chromium` is not on PATH")
        pytest.skip("`chromium` is not on PATH (Debian: apt-get install chromium); "
                    "set TEXTPROP_REQUIRE_CHROMIUM=1 to make this a failure")
    return path


def test_chromium_renders_the_chart_and_every_step(run_dir: Path, tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    report = write_report(run_dir)
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         report.as_uri()],
        capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = parse(result.stdout)
    svg = dom.one("svg", "chart")
    assert len(svg.find_all("g", "point", data_series="val")) == 4
    for n, status in enumerate(["baseline", "accepted", "rejected", "accepted"]):
        section = dom.one("section", id=f"step-{n}")
        assert section.one("header", "step-head").one(cls="badge").text() == status
    assert len(dom.one("section", id="step-2").find_all("table", "diff")) == 1
    assert dom.find_all("script") == []
