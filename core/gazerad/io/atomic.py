"""Atomic file writes: write to a temporary file in the target folder, then rename.

A reader never sees a half-written file, and an existing file is only replaced once the
new content is complete and flushed to disk (``fsync`` of the file, then of the folder, so
a power cut leaves the old file or the new one). While it is written the temporary file is
owner-only (``0o600``: an owner-only file's new content is never readable by others, not
even from a temporary file a killed process left); once complete it takes the permissions
of the file it replaces, else those a plain ``open`` would give (``0o666`` less the umask).
A symbolic link at ``path`` is replaced by the new file, not followed: a write never lands
outside the folder it names.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_bytes", "atomic_write_json", "json_safe"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary file keeps ``path``'s suffix (or ``suffix``) so writers that pick a
    format from the file name still work. On an exception the temporary file is removed
    and ``path`` is left untouched.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a folder: give the path of a file to write")
    target.parent.mkdir(parents=True, exist_ok=True)
    sfx = suffix if suffix is not None else "".join(target.suffixes) or ".tmp"
    tmp_path = _new_file(target, sfx)
    try:
        yield tmp_path
        _fsync(tmp_path)  # while still owner-only, so it can be opened whatever the final mode
        os.chmod(tmp_path, _final_mode(target))
        os.replace(tmp_path, target)
        _fsync(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _new_file(target: Path, suffix: str) -> Path:
    """A new, empty, owner-only file beside ``target`` (hidden, unique name)."""
    while True:
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return tmp
        except FileExistsError:
            continue


def _final_mode(target: Path) -> int:
    """The mode of the file ``target`` replaces (a link's own target is not consulted), else
    that of a new file under the process's umask."""
    try:
        st = target.lstat()
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except FileNotFoundError:
        pass
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where ``/proc`` tells it (setting and
    restoring it would race with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None`` and NumPy scalars as Python numbers, at
    any depth (mapping keys as strings): what strict JSON readers (a browser, FastAPI's
    responses) accept."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a NumPy or torch scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_json(path: str | os.PathLike, value: Any, indent: int | None = 1) -> None:
    """Write ``value`` as strict JSON (:func:`json_safe`) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(json_safe(value), indent=indent, allow_nan=False))
