"""Per-process scratch folders that a later start can clean up after a killed process.

A server keeps each request's uploads and result files in a scratch folder while the
request runs and removes them when it ends. A process killed mid-request (``kill -9``, out of
memory, a power cut) never gets to, so its files would stay in ``/tmp`` or in the datastore
for good. Each process therefore writes into its own folder ``<root>/<prefix><random>/`` and
holds an exclusive ``flock`` on the folder's ``.lock`` file for as long as it lives (the
kernel drops the lock when the process dies, however it dies). :func:`clean_stale` removes
the folders whose lock nobody holds: those of dead processes, never a live one's.

    scratch = ScratchFolder(tempfile.gettempdir(), "gazerad-scratch-")
    removed = clean_stale(tempfile.gettempdir(), "gazerad-scratch-")   # at start
    fd, path = tempfile.mkstemp(dir=scratch.path())
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

LOCK_NAME = ".lock"
# a folder younger than this may be one another process has just made and not locked yet
LOCK_GRACE_S = 10.0
# a folder without a lock file (made by hand, or its maker died before locking) waits longer
UNLOCKED_GRACE_S = 3600.0

__all__ = ["LOCK_GRACE_S", "LOCK_NAME", "TEMP_PREFIX", "TEMP_SCRATCH", "UNLOCKED_GRACE_S", "ScratchFolder", "clean_stale"]


class ScratchFolder:
    """This process's scratch folder under ``root``, made (mode 0700) and locked on first use.

    Construction is free of side effects; :meth:`path` makes the folder. A forked child or a
    new process makes its own folder on first use.
    """

    def __init__(self, root: str | os.PathLike, prefix: str) -> None:
        self.root = Path(root)
        self.prefix = prefix
        self._path: Path | None = None
        self._fd: int | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def path(self) -> Path:
        """The folder (made and locked now if this process has none yet, or it was removed)."""
        with self._lock:
            if self._path is None or self._pid != os.getpid() or not self._path.is_dir():
                self._open()
            assert self._path is not None
            return self._path

    def _open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=self.prefix, dir=self.root))
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: nobody else holds it
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._path, self._fd, self._pid = path, fd, os.getpid()

    def close(self) -> None:
        """Remove the folder and drop its lock (what a clean shutdown does)."""
        with self._lock:
            if self._path is not None and self._pid == os.getpid():
                shutil.rmtree(self._path, ignore_errors=True)
                if self._fd is not None:
                    os.close(self._fd)
            self._path = self._fd = self._pid = None


def clean_stale(root: str | os.PathLike, prefix: str, *, now: float | None = None) -> list[Path]:
    """Remove the scratch folders ``<root>/<prefix>*`` of processes that have died.

    A folder counts as stale when this user owns it, it is older than ``LOCK_GRACE_S`` and
    nobody holds the lock on its ``.lock`` file, or when it has no lock file and is older
    than ``UNLOCKED_GRACE_S``.
    Other users' folders and anything that is not a folder are left alone. Returns the
    folders removed.
    """
    root = Path(root)
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = sorted(root.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        try:
            st = entry.lstat()
        except FileNotFoundError:
            continue
        if not entry.is_dir() or entry.is_symlink() or st.st_uid != os.getuid():
            continue
        if _is_stale(entry, now - st.st_mtime):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _is_stale(folder: Path, age_s: float) -> bool:
    if age_s < LOCK_GRACE_S:
        return False
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return age_s > UNLOCKED_GRACE_S
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its process is alive
    finally:
        os.close(fd)  # closing drops the lock taken just now
    return True


# GazeRad's own scratch in the system temp folder (request uploads, result files)
TEMP_PREFIX = "gazerad-scratch-"
TEMP_SCRATCH = ScratchFolder(tempfile.gettempdir(), TEMP_PREFIX)
