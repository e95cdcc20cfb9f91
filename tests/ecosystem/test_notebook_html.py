"""`_repr_html_`: what Jupyter shows for a Variable and a run result (through IPython's own
HTML formatter)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from textprop import Variable
from textprop.train.trainer import RunResult
from textprop.variable import Gradient

formatters = pytest.importorskip("IPython.core.formatters")


class Text(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def shown(obj) -> Text:
    html = formatters.HTMLFormatter()(obj)
    assert html is not None, "IPython found no _repr_html_"
    return Text(html)


def test_a_variable_shows_its_value_role_and_gradients_escaped():
    prompt = Variable("Answer <b>briefly</b> & exactly.", role_description="system prompt")
    prompt.gradients.add(Gradient("Ask for an 'Answer:' line.",
                                  role_description="feedback to system prompt"))
    page = shown(prompt)
    text = "".join(page.text)
    assert "Answer <b>briefly</b> & exactly." in text  # as text, not markup
    assert page.tags.count("b") == 1 and "script" not in page.tags  # only the header's
    assert "system prompt" in text and "1 gradient" in text
    assert "Ask for an 'Answer:' line." in text


def test_a_run_result_shows_scores_and_final_prompts(tmp_path: Path):
    result = RunResult(tmp_path, "finished", 0.25, 0.2, 0.75, 0.8,
                       {"system_prompt": "Think step by step <then> answer."}, 3)
    text = "".join(shown(result).text)
    assert "finished" in text and "0.250 → 0.750" in text and "0.200 → 0.800" in text
    assert "Think step by step <then> answer." in text and "system_prompt" in text
