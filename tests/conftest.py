"""Shared fixtures: one small synthetic study set per test session (real files, real generator)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gazerad.synth.study import generate_studies

STUDY_N = 24
STUDY_SEED = 7

# Disk: CI machines may have only a few GB free. Per-test ``tmp_path`` folders of passing
# tests are removed by pytest (``tmp_path_retention_policy = "failed"`` in pyproject.toml);
# the folders that module-scoped fixtures make with ``tmp_path_factory`` are removed here when
# their module ends with no failure. Session fixtures' folders are kept until the session ends.
_SESSION_DIRS: set[Path] = set()
_FAILED_MODULES: set[str] = set()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    report = yield
    if report.failed:
        _FAILED_MODULES.add(item.module.__name__ if item.module else item.nodeid)
    return report


@pytest.fixture(scope="module", autouse=True)
def _remove_module_tmp_dirs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Remove the ``tmp_path_factory`` folders made while this module ran, unless a test failed."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    yield
    if request.module.__name__ in _FAILED_MODULES:
        return
    for d in set(base.iterdir()) - before:
        if d.is_dir() and not any(s.is_relative_to(d) for s in _SESSION_DIRS):
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 studies at full 512 px with DICOM copies, generated once per test session."""
    base = tmp_path_factory.mktemp("studies")
    _SESSION_DIRS.add(base)
    out = base / "set"
    generate_studies(out, n=STUDY_N, seed=STUDY_SEED, dicom=True, workers=2, progress=False)
    return out
