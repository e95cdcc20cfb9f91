"""Every prompt textprop sends lives in this folder as a `.txt` template.

Templates use `string.Template` syntax (`$name` / `${name}`; `$$` for a dollar sign), so
braces in JSON examples need no escaping. `render` fails loudly on a missing field.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from string import Template

from textprop.errors import TextpropError


@cache
def template(name: str) -> Template:
    try:
        text = resources.files(__name__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TextpropError(f"no prompt template named {name!r} in textprop/prompts/") from None
    # Files end with one newline for editors; the prompt itself does not.
    return Template(text.removesuffix("\n"))


def render(template_name: str, /, **fields: object) -> str:
    """Fill template `name` with `fields`; every placeholder must be given."""
    try:
        return template(template_name).substitute({k: str(v) for k, v in fields.items()})
    except KeyError as missing:
        raise TextpropError(f"prompt template {template_name!r} needs field {missing}") from None


_TAG = re.compile(r"</?[A-Z][A-Z_]{2,}>")


@cache
def markup_tags() -> frozenset[str]:
    """Every tag textprop's own prompts use to frame their parts (`<LM_OUTPUT>`,
    `</VARIABLE>`, ...): text a writer copies from them into a variable is not the variable's."""
    files = resources.files(__name__).iterdir()
    return frozenset(tag for f in files if f.name.endswith(".txt")
                     for tag in _TAG.findall(f.read_text(encoding="utf-8")))


def tags_in(text: str) -> set[str]:
    """textprop's markup tags (`markup_tags`) that occur in `text`."""
    return set(_TAG.findall(text)) & markup_tags()
