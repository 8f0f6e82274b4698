"""Atomic writes: all or nothing, and the permissions an ordinary write would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gazerad.io.atomic import atomic_path, atomic_write_text


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_new_files_get_the_umask_mode_and_replaced_files_keep_theirs(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "index.json", "{}")
        assert _mode(tmp_path / "index.json") == 0o644  # what open() gives under this umask, not mkstemp's 0o600
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.json", "{}")
        assert _mode(tmp_path / "private.json") == 0o600
        os.chmod(tmp_path / "index.json", 0o640)
        atomic_write_text(tmp_path / "index.json", '{"a": 1}')
        assert _mode(tmp_path / "index.json") == 0o640 and (tmp_path / "index.json").read_text() == '{"a": 1}'
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json", "private.json"]  # no temporary files left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "models" / "model.pt"
    atomic_write_text(target, "old")  # creates the folder
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp.name.startswith(".model.pt.") and tmp.suffix == ".pt"
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == ["model.pt"]
    with atomic_path(target, suffix=".nrrd") as tmp:
        assert tmp.suffix == ".nrrd"
        tmp.write_text("new")
    assert target.read_text() == "new" and [p.name for p in target.parent.iterdir()] == ["model.pt"]
