"""Every prompt textprop sends lives in this folder as a `.txt` template.

Templates use `string.Template` syntax (`$name` / `${name}`; `$$` for a dollar sign), so
braces in JSON examples need no escaping. `render` fails loudly on a missing field.
"""

from __future__ import annotations

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
