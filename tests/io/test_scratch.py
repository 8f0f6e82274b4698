"""Per-process scratch folders: a killed process's folder is removed, a live one's never."""

from __future__ import annotations

import os
import time
from pathlib import Path

from gazerad.io.scratch import LOCK_GRACE_S, LOCK_NAME, UNLOCKED_GRACE_S, ScratchFolder, clean_stale
from tests.support.server import killed_process_folder

PREFIX = "t-scratch-"
LATER = LOCK_GRACE_S + 5  # seconds: past the grace a just-made folder gets


def test_a_folder_is_made_on_first_use_owner_only_and_locked(tmp_path: Path) -> None:
    s = ScratchFolder(tmp_path / "root", PREFIX)
    assert not (tmp_path / "root").exists()  # construction makes nothing
    p = s.path()
    assert p.parent == tmp_path / "root" and p.name.startswith(PREFIX)
    assert (p / LOCK_NAME).is_file() and p.stat().st_mode & 0o777 == 0o700
    assert s.path() == p  # one folder per process
    assert clean_stale(tmp_path / "root", PREFIX, now=time.time() + LATER) == []
    assert p.is_dir()
    s.close()
    assert not p.exists()


def test_a_killed_process_folder_is_removed_and_a_live_one_kept(tmp_path: Path) -> None:
    dead = killed_process_folder(tmp_path, PREFIX)
    assert (dead / "up-half").is_file()  # what a kill -9 mid-request leaves
    live = ScratchFolder(tmp_path, PREFIX).path()
    (live / "up-busy").write_bytes(b"y")
    other = tmp_path / "someone-else"
    other.mkdir()
    assert clean_stale(tmp_path, PREFIX) == []  # both just made: within the grace
    assert clean_stale(tmp_path, PREFIX, now=time.time() + LATER) == [dead]
    assert not dead.exists()
    assert (live / "up-busy").read_bytes() == b"y" and other.is_dir()


def test_a_folder_without_a_lock_waits_for_the_longer_grace(tmp_path: Path) -> None:
    bare = tmp_path / f"{PREFIX}bare"
    bare.mkdir()
    assert clean_stale(tmp_path, PREFIX, now=time.time() + LATER) == []
    assert clean_stale(tmp_path, PREFIX, now=time.time() + UNLOCKED_GRACE_S + 5) == [bare]


def test_links_and_files_with_the_prefix_are_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    (target / LOCK_NAME).write_text("")
    (target / "keep").write_text("keep")
    os.symlink(target, tmp_path / f"{PREFIX}link")
    (tmp_path / f"{PREFIX}file").write_text("a file, not a folder")
    assert clean_stale(tmp_path, PREFIX, now=time.time() + UNLOCKED_GRACE_S + 5) == []
    assert (target / "keep").read_text() == "keep" and (tmp_path / f"{PREFIX}file").exists()


def test_a_removed_folder_is_made_again(tmp_path: Path) -> None:
    s = ScratchFolder(tmp_path, PREFIX)
    first = s.path()
    s.close()
    second = s.path()
    assert second.is_dir() and second != first
    assert clean_stale(tmp_path, PREFIX, now=time.time() + LATER) == []
    assert clean_stale(tmp_path / "missing", PREFIX) == []
