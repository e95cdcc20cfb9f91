"""TextGrad 0.1.8's own tutorial notebooks run with textprop in place of textgrad.

Every notebook in ../shared/textgrad-0.1.8-examples is either run here, every cell, or
listed in NOT_RUNNABLE_OFFLINE with the reason (something outside textprop). See
`notebooks.py` for what is changed: the import, and each case's `edits`, nothing else.
"""

from __future__ import annotations

import pytest

from tests.compat.notebooks import (
    Notebook,
    Replies,
    require_examples,
    run_notebook,
    textprop_cells,
)
from textprop.testing.server import TestServer

IMAGE = "{examples}/176.png"
LIS_PROBLEM = "Longest Increasing Subsequence"

NOTEBOOKS = {
    "Local-Model-With-LMStudio": Notebook(
        "Local-Model-With-LMStudio.ipynb",
        Replies(forward="x = (7 ± √73) / 6",
                rules=(("You will evaluate a solution to a math question",
                        "The discriminant is wrong: it is 49 - 24 = 25, not 73."),),
                rewrite="x = (7 ± 5) / 6, so x1 = 2 and x2 = 1/3."),
        edits={'base_url="http://localhost:1234/v1"': 'base_url="{server}"'}),
    "TextGrad-Vision-MathVista": Notebook(
        "TextGrad-Vision-MathVista.ipynb",
        Replies(forward="All sides of an equilateral triangle are equal, so RS = 2. (D)",
                rules=(("evaluates image-related questions",
                        "The answer does not show how the side lengths were read."),),
                rewrite="The triangle is equilateral, so 4x - 1 = 2x + 1, x = 1, RS = 2. "
                        "Answer: D"),
        edits={'image_path = ".assets/176.png"': f'image_path = "{IMAGE}"'}),
    "Tutorial-ExperimentalEngines": Notebook(
        "Tutorial-ExperimentalEngines.ipynb",
        Replies(forward="3 + 4 = 7", rules=(("what is this my boy", "An ant, my friend."),)),
        edits={"image_data = httpx.get(image_url).content":
               f'image_data = open("{IMAGE}", "rb").read()'}),
    "Tutorial-MultiModal": Notebook(
        "Tutorial-MultiModal.ipynb",
        Replies(forward="A geometry figure: a triangle with sides marked 4x - 1 and 2x + 1.",
                rules=(("evaluates image-related questions",
                        "It misses the lengths written on the third side."),),
                rewrite="A triangle QRS with sides 4x - 1, 2x + 1 and 3x, marked equal."),
        edits={"image_data = httpx.get(image_url).content":
               f'image_data = open("{IMAGE}", "rb").read()'}),
    "Tutorial-Primitives": Notebook(
        "Tutorial-Primitives.ipynb",
        Replies(forward="I am fine, thank you.",
                rules=(("Evaluate the correctness of this sentence",
                        "'sntence' is misspelled."),),
                rewrite="A sentence with a typo")),
    "Tutorial-Prompt-Optimization": Notebook(
        "Tutorial-Prompt-Optimization.ipynb",
        Replies(forward="Let me count the items one by one.\nAnswer: 8",
                feedback="Ask the model to list each item with its count before adding.",
                rewrite="You will answer a reasoning question. List every item with its "
                        "count, then add them. The last line of your response should be of "
                        "the following format: 'Answer: $VALUE' where VALUE is a numerical "
                        "value.")),
    "Tutorial-Solution-Optimization": Notebook(
        "Tutorial-Solution-Optimization.ipynb",
        Replies(forward="x = (7 ± √73) / 6",
                rules=(("You will evaluate a solution to a math question",
                        "The discriminant is wrong: it is 49 - 24 = 25, not 73."),),
                rewrite="x = (7 ± 5) / 6, so x1 = 2 and x2 = 1/3.")),
    "Tutorial-Test-Time-Loss-for-Code": Notebook(
        "Tutorial-Test-Time-Loss-for-Code.ipynb",
        Replies(forward="The code is correct but runs in O(n^2) time.",
                rules=((LIS_PROBLEM, "The code is correct but runs in O(n^2); use "
                                     "patience sorting with binary search for O(n log n)."),),
                rewrite="def longest_increasing_subsequence(nums):\n    import bisect\n"
                        "    tails = []\n    for x in nums:\n"
                        "        i = bisect.bisect_left(tails, x)\n"
                        "        tails[i:i + 1] = [x]\n    return len(tails)\n"),
        # The notebook's own guard: run_function_in_interpreter raises before running
        # model-written code, so the cells that call it fail under TextGrad too.
        expected_errors={3: "Exception: This function will run the code returned by GPT-4o",
                         10: "Exception: This function will run the code returned by GPT-4o",
                         12: "Exception: This function will run the code returned by GPT-4o"}),
}

NOT_RUNNABLE_OFFLINE = {
    "TextGrad_Chemeleon_ScienceQA.ipynb":
        "imports its helper modules load_task, scienceqa and chameleon_modules from TextGrad's "
        "examples/notebooks/chameleon/ (not part of the notebooks folder), loads ScienceQA from "
        "the Hugging Face hub with `datasets`, and its OCR step downloads easyocr's models",
    "Tutorial-PrimitivesExperimentalEngines.ipynb":
        "cell 7 imports and configures the litellm package itself (`import litellm; "
        "litellm.set_verbose=True`); textprop maps `experimental:` engines to its own providers "
        "and does not install litellm",
}


def test_every_notebook_is_run_or_listed_with_its_reason():
    examples = require_examples()
    run = {case.file for case in NOTEBOOKS.values()}
    found = {p.name for p in examples.glob("*.ipynb")}
    assert found == run | set(NOT_RUNNABLE_OFFLINE)
    assert not run & set(NOT_RUNNABLE_OFFLINE)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs_every_cell(name, tmp_path):
    examples = require_examples()
    case = NOTEBOOKS[name]
    with TestServer(reply=case.replies) as server:
        cells = textprop_cells(case, examples, server)
        results, output = run_notebook(cells, server, tmp_path)
        requests = server.requests
    assert len(results) == len(cells), f"the notebook stopped early:\n{output[-4000:]}"
    failures = {i: r for i, r in enumerate(results)
                if r != "ok" and not r.startswith(case.expected_errors.get(i, "\0"))}
    assert not failures, f"cells failed: {failures}\n{output[-6000:]}"
    for i, message in case.expected_errors.items():
        assert results[i].startswith(message), (i, results[i])
    assert requests, "the notebook never reached the test server"
