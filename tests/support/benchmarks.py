"""Load a script of ``benchmarks/`` as a module (its ``main``, ``parse_args`` and constants)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.support.server import REPO


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
