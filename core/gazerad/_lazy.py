"""Lazy package exports: ``import gazerad.<package>`` stays cheap, a name's module loads on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` exporting ``name -> submodule``
    (relative to the package, e.g. ``"trainer"``) without importing the submodules."""

    def getattr_(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    exported = sorted(names)
    return exported, getattr_, lambda: exported
