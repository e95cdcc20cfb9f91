"""The docs point at what exists: the README links the architecture page, and every module
and folder that page names is in the source tree. Issue 14, item 19."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "textprop"


def test_the_readme_links_the_architecture_page_that_exists():
    readme = (REPO / "README.md").read_text()
    assert "ARCHITECTURE.md" not in readme
    assert "](docs/architecture.md)" in readme and (REPO / "docs" / "architecture.md").is_file()


def test_every_module_the_architecture_page_names_exists():
    page = (REPO / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`([\w/]+(?:\.py|/))`", page))
    assert {"train/strategies/__init__.py", "engines/registry.py", "backward.py"} <= named
    relative = {"pool.py", "selection.py", "merge.py"}  # named beside strategies/pareto.py
    missing = [name for name in sorted(named) if not (PACKAGE / name).exists()
               and not any((PACKAGE / folder / name).exists()
                           for folder in ("engines", "train", "train/strategies", "functions"))]
    assert not missing and relative <= named
    for section in ("## Engines", "## A run, and the data flow of one step", "## Where to add"):
        assert section in page
    for what in ("A strategy", "A pipeline kind", "An engine", "A metric"):
        assert f"- **{what}**" in page
