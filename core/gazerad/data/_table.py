"""Small CSV helpers that turn every problem into an :class:`~gazerad.errors.InputError`."""

from __future__ import annotations

import csv
import gzip
import math
import os
from pathlib import Path

from gazerad.errors import InputError


def read_rows(path: str | os.PathLike, required: list[str], delimiter: str = ",") -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV (or a gzip-compressed ``.csv.gz``) with a header; check ``required`` columns are present.

    Returns:
        ``(header, rows)``; each row is a dict keyed by header (1-based data row = index + 1).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "file does not exist")
    try:
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt", newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise InputError(p, "file is empty (no header row)") from None
            rows = []
            for i, rec in enumerate(reader, start=1):
                if not any(c.strip() for c in rec):
                    continue
                if len(rec) < len([h for h in header if h]):
                    raise InputError(p, f"has {len(rec)} fields, the header has {len(header)}", row=i)
                rows.append(dict(zip(header, rec)))
    except UnicodeDecodeError:
        raise InputError(p, "is not a UTF-8 text/CSV file") from None
    except (gzip.BadGzipFile, EOFError) as exc:
        raise InputError(p, f"not a readable gzip file: {exc}") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(p, f"missing column(s) {missing}; found {[h for h in header if h]}")
    return header, rows


def to_float(path: str | os.PathLike, row: int, column: str, text: str, allow_nan: bool = False) -> float:
    """Parse a float field, naming file, row and column on failure."""
    try:
        v = float(text)
    except ValueError:
        raise InputError(path, f"column {column!r}: {text!r} is not a number", row=row) from None
    if not allow_nan and not math.isfinite(v):
        raise InputError(path, f"column {column!r}: value is {text!r} (NaN/inf not allowed)", row=row)
    return v
