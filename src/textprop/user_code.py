"""Code a config names: `module:function` metrics and `python:module:factory` engines.

A config that names them runs that code, so a config is code and must be trusted like code.
Both are found the same way: an installed module, else one in the current directory (as
`python -m` finds it), or a `path/to/file.py`. Every failure is one `ConfigError` saying
what was looked for.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from textprop.errors import ConfigError


def import_user_module(module_name: str, label: str, kind: str) -> ModuleType:
    """Import `module_name` (or a `.py` path) for `label` (e.g. "metric 'm:f'"); `kind`
    names the module a `.py` file is loaded as (`textprop_user_<kind>_<stem>`)."""
    if module_name.endswith(".py"):
        return _import_file(Path(module_name), label, kind)
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name + ".").startswith(error.name + "."):
            raise ConfigError(f"{label}: cannot import module {module_name!r} "
                              "(not installed, and not found in the current directory)"
                              ) from None
        raise _import_failed(label, module_name, error) from error
    except Exception as error:  # the user's module itself failed while importing
        raise _import_failed(label, module_name, error) from error
    finally:
        if added:
            sys.path.remove(cwd)


def _import_file(path: Path, label: str, kind: str) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"{label}: no such file {str(path)!r}")
    name = f"textprop_user_{kind}_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None  # a .py file path
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # as `import` does: dataclasses and pickle look modules up there
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise _import_failed(label, str(path), error) from error
    return module


def _import_failed(label: str, module_name: str, error: BaseException) -> ConfigError:
    return ConfigError(f"{label}: importing {module_name!r} failed: "
                       f"{type(error).__name__}: {error}")
