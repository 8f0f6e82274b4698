"""Unpacking archives that come from clients: every entry confined, no links, bounded size.

:func:`safe_extract` reads a tar (plain, gz, bz2, xz) or zip file, judged by content, and
refuses the whole archive, before writing anything, when an entry is absolute, has a
``..`` or any name the confinement rule refuses (:func:`gazerad.io.confine.check_archive_member`),
is a link, device or FIFO, or when entries or their total size pass the limits (zip bombs).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path

from gazerad.io.confine import UnsafeName, check_archive_member, confine

__all__ = ["safe_extract"]


def _members(path: Path) -> tuple[str, list[tuple[str, int, object]]]:
    """``(kind, [(name, size, handle)])`` of the archive's regular files (directories skipped)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            out = []
            for info in z.infolist():
                if info.is_dir():
                    continue
                mode = (info.external_attr >> 16) & 0o170000
                if mode and mode != 0o100000:
                    raise UnsafeName(f"archive entry {info.filename!r} is not a regular file (links and devices are refused)")
                out.append((info.filename, info.file_size, info))
            return "zip", out
    try:
        with tarfile.open(path) as t:
            out = []
            for m in t.getmembers():
                if m.isdir():
                    continue
                if not m.isfile():
                    raise UnsafeName(f"archive entry {m.name!r} is not a regular file (links and devices are refused)")
                out.append((m.name, m.size, m))
            return "tar", out
    except tarfile.TarError:
        raise UnsafeName("the upload is neither a tar nor a zip archive (judged by its content)") from None


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, max_total: int = 1 << 30, max_files: int = 10_000) -> list[Path]:
    """Extract ``archive`` into the existing folder ``dest``; returns the files written.

    Raises:
        UnsafeName: naming the first refused entry, the limit passed, or the corruption found
        (a bad CRC, a truncated stream, no file at all); ``dest`` is left as it was.
    """
    root = Path(dest)
    before = set(root.iterdir())
    try:
        return _extract(Path(archive), root, max_total, max_files)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        for p in set(root.iterdir()) - before:  # what a corrupt entry half wrote
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        if isinstance(exc, FileExistsError):
            raise
        raise UnsafeName(f"corrupt archive ({type(exc).__name__}: {str(exc)[:120]})") from None


def _extract(path: Path, root: Path, max_total: int, max_files: int) -> list[Path]:
    kind, members = _members(path)
    if not members:
        raise UnsafeName("archive holds no file")
    if len(members) > max_files:
        raise UnsafeName(f"archive holds {len(members)} files, more than the limit of {max_files}")
    total = sum(int(s) for _, s, _ in members)
    if total > max_total:
        raise UnsafeName(f"archive unpacks to {total} bytes, more than the limit of {max_total}")
    targets = []
    seen = set()
    for name, _, handle in members:
        rel = check_archive_member(name)
        if rel in seen:
            raise UnsafeName(f"archive entry {name!r} appears twice")
        seen.add(rel)
        targets.append((rel, handle))
    written = []
    opener = zipfile.ZipFile(path) if kind == "zip" else tarfile.open(path)
    with opener as arc:
        for rel, handle in targets:
            folder = root
            for part in rel.parts[:-1]:
                folder = confine(folder, part, "archive folder")
                folder.mkdir(exist_ok=True)
            out = confine(folder, rel.parts[-1], "archive entry")
            src = arc.open(handle) if kind == "zip" else arc.extractfile(handle)
            with src, open(out, "xb") as fh:
                shutil.copyfileobj(src, fh, 1 << 20)
            written.append(out)
    return written
