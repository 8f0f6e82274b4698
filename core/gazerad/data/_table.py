"""Small CSV helpers that turn every problem into an :class:`~gazerad.errors.InputError`."""

from __future__ import annotations

import csv
import gzip
import math
import os
import zlib
from pathlib import Path

from gazerad.errors import InputError


def is_present_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is there as a file (``False`` when absent); a folder or a device in
    its place is an :class:`InputError`."""
    p = Path(path)
    if p.is_file():
        return True
    if p.exists():
        raise InputError(p, "is a folder, not a file" if p.is_dir() else "is not a regular file")
    return False


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file's content (a BOM dropped); :class:`InputError` naming the file when
    it is not UTF-8 or cannot be read."""
    p = Path(path)
    try:
        return p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(p, "is not a UTF-8 text file") from None
    except OSError as exc:
        raise InputError(p, f"cannot be read: {exc.strerror or exc}") from None


def read_rows(path: str | os.PathLike, required: list[str], delimiter: str = ",") -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV (or a gzip-compressed ``.csv.gz``) with a header; check ``required`` columns are present.

    Returns:
        ``(header, rows)``; each row is a dict keyed by header (1-based data row = index + 1).
    """
    p = Path(path)
    if not is_present_file(p):
        raise InputError(p, "file does not exist")
    try:
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt", newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise InputError(p, "file is empty (no header row)") from None
            named = [h for h in header if h]
            twice = sorted({h for h in named if named.count(h) > 1})
            if twice:  # a dict row would keep only the last one's values
                raise InputError(p, f"column(s) {twice} appear more than once in the header")
            rows = []
            for i, rec in enumerate(reader, start=1):
                if not any(c.strip() for c in rec):
                    continue
                if len(rec) < len(named):
                    raise InputError(p, f"has {len(rec)} fields, the header has {len(header)}", row=i)
                if any(c.strip() for c in rec[len(header) :]):
                    raise InputError(p, f"has {len(rec)} fields, more than the header's {len(header)} (an unquoted comma?)", row=i)
                rows.append(dict(zip(header, rec)))
    except UnicodeDecodeError:
        raise InputError(p, "is not a UTF-8 text/CSV file") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InputError(p, f"not a readable gzip file: {exc}") from None
    except csv.Error as exc:
        raise InputError(p, f"is not a readable CSV file: {exc}") from None
    except OSError as exc:
        raise InputError(p, f"cannot be read: {exc.strerror or exc}") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(p, f"missing column(s) {missing}; found {[h for h in header if h]}")
    return header, rows


def parse_float(value: object) -> float:
    """``float(value)`` without its leniency: no ``_`` digit separators, no non-ASCII digits,
    no booleans; an integer too large for a float is refused too.

    Raises:
        ValueError: ``value`` is not a plain number (NaN/inf text is returned as such).
    """
    if isinstance(value, bool) or (isinstance(value, str) and ("_" in value or not value.isascii())):
        raise ValueError(f"{value!r} is not a number")
    try:
        return float(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]
    except (TypeError, OverflowError):
        raise ValueError(f"{value!r} is not a number") from None


def to_float(path: str | os.PathLike, row: int, column: str, text: str, allow_nan: bool = False) -> float:
    """Parse a float field, naming file, row and column on failure."""
    try:
        v = parse_float(text)
    except ValueError:
        raise InputError(path, f"column {column!r}: {text!r} is not a number", row=row) from None
    if not allow_nan and not math.isfinite(v):
        raise InputError(path, f"column {column!r}: value is {text!r} (NaN/inf not allowed)", row=row)
    return v
