"""The one confinement rule for names that arrive from outside (requests, archives, uploads).

Every image id, label tag, session id, file name and archive entry a client sends goes
through :func:`check_name` (a plain name of allowed characters and length) and, where it
becomes a path, :func:`confine` (the final path, symlinked folders resolved, must lie
directly inside its folder). Nothing else in GazeRad builds a path from client input.

File types come from content (:func:`sniff_image_suffix`), never from a client's file name.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

__all__ = ["MAX_NAME", "UnsafeName", "check_name", "is_safe_name", "confine", "sniff_image_suffix", "check_archive_member"]

MAX_NAME = 128
# letters, digits, '_', '-', '.', '+'; the first character a letter, digit or '_'
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
_RULE = f"it must be a plain name of ASCII letters, digits, '_', '-', '.' and '+' (at most {MAX_NAME} characters, not starting with '.' or '-')"


class UnsafeName(ValueError):
    """A name from a request that is not a plain, allowed name (answered with 400)."""


def _show(name: object) -> str:
    s = repr(name)
    return s if len(s) <= 60 else s[:40] + f"...' ({len(str(name))} characters)"


def check_name(name: object, what: str = "name") -> str:
    """Return ``name`` when it is a plain allowed name, else raise :class:`UnsafeName`.

    Refused: non-strings, empty, longer than :data:`MAX_NAME`, any character outside
    ``[A-Za-z0-9_.+-]`` (so no ``/``, ``\\``, NUL, ``%``, spaces, unicode), a leading ``.``
    or ``-`` (hidden files, ``..``, options).
    """
    if not isinstance(name, str) or not name:
        raise UnsafeName(f"invalid {what} {_show(name)}: {_RULE}")
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise UnsafeName(f"invalid {what} {_show(name)}: {_RULE}")
    return name


def is_safe_name(name: object) -> bool:
    """``True`` when :func:`check_name` accepts ``name``."""
    try:
        check_name(name)
    except UnsafeName:
        return False
    return True


def confine(root: str | os.PathLike, name: str, what: str = "name", suffix: str = "") -> Path:
    """``root / (name + suffix)`` after :func:`check_name`, checked to lie directly inside
    ``root`` once every symlink is resolved, the final one included (a linked tag folder or
    file pointing elsewhere is refused): :class:`UnsafeName` otherwise."""
    check_name(name, what)
    if suffix and ("/" in suffix or "\\" in suffix or "\x00" in suffix):
        raise UnsafeName(f"invalid file suffix {suffix!r}")
    base = Path(os.path.realpath(root))
    path = base / f"{name}{suffix}"
    if Path(os.path.realpath(path)).parent != base or path.name in (".", ".."):
        raise UnsafeName(f"invalid {what} {_show(name)}: it does not stay inside its folder")
    return path


def check_archive_member(member: str, what: str = "archive entry") -> Path:
    """A relative path of plain names (each through :func:`check_name`) for one archive entry."""
    if not isinstance(member, str) or not member or member.startswith(("/", "\\")) or "\\" in member or "\x00" in member:
        raise UnsafeName(f"invalid {what} {_show(member)}: absolute paths and backslashes are refused")
    parts = [p for p in member.split("/") if p not in ("", ".")]
    if not parts or len(parts) > 8:
        raise UnsafeName(f"invalid {what} {_show(member)}: expected a relative path of at most 8 plain names")
    for p in parts:
        check_name(p, what)
    return Path(*parts)


_NIFTI_MAGIC = (b"n+1\x00", b"ni1\x00", b"n+2\x00", b"ni2\x00")


def _nifti_header(head: bytes) -> bool:
    return len(head) >= 348 and (head[344:348] in _NIFTI_MAGIC or head[4:8] in _NIFTI_MAGIC)


def sniff_image_suffix(path: str | os.PathLike) -> str | None:
    """The file suffix an image file's *content* calls for: ``.png``, ``.jpg``, ``.dcm``,
    ``.nii``, ``.nii.gz`` or ``.nrrd``; ``None`` for anything else."""
    with open(path, "rb") as fh:
        head = fh.read(600)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return ".dcm"
    if head.startswith(b"NRRD000"):
        return ".nrrd"
    if _nifti_header(head):
        return ".nii"
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as g:
                if _nifti_header(g.read(600)):
                    return ".nii.gz"
        except (OSError, EOFError):
            return None
    return None
