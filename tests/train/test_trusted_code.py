"""A config is code: `module:function` metrics and `python:module:factory` engines both run
code the config names, and both find it the same way (installed, else in the current
directory, or a .py file path). Issue 14, item 11."""

from __future__ import annotations

import json

import pytest

from textprop.cli import main

from .fake_pipeline import IMPROVED, write_run_config

ENGINE_MODULE = """
from tests.train.fake_pipeline import make_engine as _make

def make_engine():
    return _make()
"""
METRIC_MODULE = """
def score(prediction, target):
    return (1.0, "right") if target in prediction else (0.0, f"expected {target}")
"""


@pytest.mark.parametrize("form", ["module", "file"])
def test_metrics_and_engine_factories_resolve_user_modules_alike(tmp_path, monkeypatch,
                                                                 capsys, form):
    code = tmp_path / "project"
    code.mkdir()
    (code / "my_engine_xyz.py").write_text(ENGINE_MODULE)
    (code / "my_metric_xyz.py").write_text(METRIC_MODULE)
    name = {"module": "{}", "file": str(code / "{}.py")}[form]
    config = write_run_config(
        tmp_path, engine=f"python:{name.format('my_engine_xyz')}:make_engine",
        train=[(1, 2), (3, 4)], val=[(2, 2)], test=[(9, 9)],
        metric={"name": f"{name.format('my_metric_xyz')}:score"},
        trainer={"batch_size": 2, "steps_per_epoch": 1})
    monkeypatch.chdir(code)

    assert main(["optimize", config, "--run-dir", str(tmp_path / "run"), "--json"]) == 0, \
        capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["values"] == {"system_prompt": IMPROVED}


def test_a_missing_factory_module_is_reported_like_a_missing_metric_module(tmp_path, capsys):
    config = write_run_config(tmp_path, engine="python:no_such_factory_xyz:make",
                              train=[(1, 2)], val=[(2, 2)], test=[(9, 9)])
    assert main(["optimize", config]) == 1
    assert capsys.readouterr().err.strip() == (
        f"textprop: error: {config}, field 'engines.default': engine factory "
        "'python:no_such_factory_xyz:make': cannot import module 'no_such_factory_xyz' (not "
        "installed, and not found in the current directory)")
