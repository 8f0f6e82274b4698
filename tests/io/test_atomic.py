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


def test_content_is_owner_only_until_complete_whatever_the_final_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        secret, public = tmp_path / "token", tmp_path / "index.json"
        atomic_write_text(secret, "old")
        os.chmod(secret, 0o600)
        for target, final in ((secret, 0o600), (public, 0o644)):
            with atomic_path(target) as tmp:
                tmp.write_text("new content")
                assert _mode(tmp) == 0o600  # a reader (or a file left by a kill) never sees it early
            assert _mode(target) == final and target.read_text() == "new content"
        os.chmod(public, 0o200)  # write-only: the flush must not need to reopen it for reading
        atomic_write_text(public, "again")
        assert _mode(public) == 0o200
    finally:
        os.umask(old)


def test_a_link_is_replaced_not_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text("untouched")
    folder = tmp_path / "store"
    folder.mkdir()
    (folder / "index.json").symlink_to(outside)
    atomic_write_text(folder / "index.json", "{}")
    assert outside.read_text() == "untouched"
    assert not (folder / "index.json").is_symlink() and (folder / "index.json").read_text() == "{}"


def test_json_is_written_strict(tmp_path: Path) -> None:
    import json

    import numpy as np
    import torch

    from gazerad.io.atomic import atomic_write_json

    value = {1: np.float64("nan"), "auc": {"Mass": np.float32(0.75), "Nodule": float("inf")}, "n": np.int64(3), "t": torch.tensor(0.5), "x": (None, "a")}
    atomic_write_json(tmp_path / "stats.json", value)
    text = (tmp_path / "stats.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"1": None, "auc": {"Mass": 0.75, "Nodule": None}, "n": 3, "t": 0.5, "x": [None, "a"]}
