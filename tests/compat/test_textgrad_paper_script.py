"""TextGrad's paper script for prompt optimization runs with TEXTPROP_DATA set.

`textgrad_prompt_optimization.py` is TextGrad's `evaluation/prompt_optimization.py` with its
two imports changed. It runs here as a user would run it, with its own defaults (BBH object
counting, gpt-4o judging and rewriting, gpt-3.5-turbo-0125 answering, 3 epochs of 4 steps),
the two models being the test server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.compat.notebooks import DATA, Replies, environment, require_examples
from textprop.testing.server import TestServer

SCRIPT = Path(__file__).with_name("textgrad_prompt_optimization.py")
REWRITE = ("You will answer a reasoning question. List every item with its count, then add "
           "them. The last line of your response should be of the following format: "
           "'Answer: $VALUE' where VALUE is a numerical value.")


def test_the_paper_script_runs_on_a_copy_of_the_shared_data(tmp_path):
    require_examples()  # the same shared/ folder holds the data
    data = tmp_path / "data"
    shutil.copytree(DATA / "bbh", data / "bbh")
    (tmp_path / "figures").mkdir()  # the script writes its results there
    replies = Replies(forward="Counting one by one.\nAnswer: 8",
                      feedback="List each item with its count before adding.", rewrite=REWRITE)
    with TestServer(reply=replies) as server:
        env = environment(server, tmp_path) | {"TEXTPROP_DATA": str(data)}
        done = subprocess.run([sys.executable, str(SCRIPT), "--num_threads", "4"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=600, check=False)
        models = {r.body["model"] for r in server.requests}
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Train/Val/Test Set Lengths:  50 100 100" in done.stdout
    results = json.loads(
        (tmp_path / "figures" / "results_BBH_object_counting_gpt-3.5-turbo-0125.json").read_text())
    assert len(results["test_acc"]) == 1 + 3 * 4  # before training, then after every step
    assert all(len(accuracies) == 100 for accuracies in results["test_acc"])
    assert results["prompt"][-1] == REWRITE
    assert models == {"gpt-4o", "gpt-3.5-turbo-0125"}
