"""Atomic file writes: write to a temporary file in the target folder, then rename.

A reader never sees a half-written file, and an existing file is only replaced once the
new content is complete and flushed to disk (``fsync`` of the file, then of the folder, so
a power cut leaves the old file or the new one). The new file has the permissions of the
file it replaces, else those a plain ``open`` would give (``0o666`` less the umask), not
``tempfile``'s owner-only ``0o600``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_bytes"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary file keeps ``path``'s suffix (or ``suffix``) so writers that pick a
    format from the file name still work. On an exception the temporary file is removed
    and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    sfx = suffix if suffix is not None else "".join(target.suffixes) or ".tmp"
    tmp_path = _new_file(target, sfx)
    try:
        yield tmp_path
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp_path, stat.S_IMODE(target.stat().st_mode))  # keep the replaced file's permissions
        _fsync(tmp_path)
        os.replace(tmp_path, target)
        _fsync(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _new_file(target: Path, suffix: str) -> Path:
    """A new, empty file beside ``target`` (hidden, unique name), created with mode ``0o666``
    so the umask decides its permissions as for any new file."""
    while True:
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk; folders that cannot be opened
    for that (some file systems) are skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))
