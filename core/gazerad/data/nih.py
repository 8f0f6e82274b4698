"""NIH ChestX-ray14 tables: ``BBox_List_2017.csv`` boxes and multi-label tables."""

from __future__ import annotations

import os
from pathlib import Path

from gazerad.data._table import read_rows, to_float
from gazerad.errors import InputError

__all__ = ["BOX_ALIASES", "read_bbox_list", "read_labels"]

#: ``BBox_List_2017.csv`` names ``Infiltrate`` what the data-entry table calls ``Infiltration``.
BOX_ALIASES = {"Infiltrate": "Infiltration"}


def read_bbox_list(path: str | os.PathLike) -> dict[str, list[tuple[str, tuple[float, float, float, float]]]]:
    """Read NIH ``BBox_List_2017.csv``: ``Image Index, Finding Label, Bbox [x, y, w, h]``.

    The NIH header splits the box over four columns named ``Bbox [x``, ``y``, ``w``,
    ``h]``; plain ``x, y, w, h`` columns are accepted too. Boxes are ``[x, y, w, h]`` in
    pixels (:mod:`gazerad.coords`). Labels are those of the data-entry table
    (:data:`BOX_ALIASES`: ``Infiltrate`` is read as ``Infiltration``).

    Returns:
        image index -> list of ``(label, (x, y, w, h))``, in file order.

    Raises:
        InputError: missing file/columns, non-numeric or non-positive sizes, a row repeating
            another's image, finding and box (names the row).
    """
    p = Path(path)
    header, rows = read_rows(p, ["Image Index", "Finding Label"])
    if all(c in header for c in ("Bbox [x", "y", "w", "h]")):
        cols = ("Bbox [x", "y", "w", "h]")
    elif all(c in header for c in ("x", "y", "w", "h")):
        cols = ("x", "y", "w", "h")
    else:
        raise InputError(p, f"missing box columns: expected 'Bbox [x,y,w,h]' (NIH) or x, y, w, h; found {header}")
    out: dict[str, list[tuple[str, tuple[float, float, float, float]]]] = {}
    seen: dict[tuple, int] = {}
    for i, r in enumerate(rows, start=1):
        x, y, w, h = (to_float(p, i, c, r[c]) for c in cols)
        if w <= 0 or h <= 0:
            raise InputError(p, f"box width and height must be > 0, got w={w}, h={h}", row=i)
        image = r["Image Index"].strip()
        if not image:
            raise InputError(p, "empty 'Image Index'", row=i)
        label = BOX_ALIASES.get(r["Finding Label"].strip(), r["Finding Label"].strip())
        key = (image, label, x, y, w, h)
        if key in seen:  # it would count twice in T(IoU) and in the class's box sizes
            raise InputError(p, f"repeats row {seen[key]} (same image, finding and box): remove one of them", row=i)
        seen[key] = i
        out.setdefault(image, []).append((label, (x, y, w, h)))
    return out


def read_labels(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a multi-label table with ``Image Index`` and ``|``-separated ``Finding Labels``.

    Returns:
        image index -> sorted labels (``[]`` for ``No Finding``).
    """
    p = Path(path)
    _, rows = read_rows(p, ["Image Index", "Finding Labels"])
    out: dict[str, list[str]] = {}
    for i, r in enumerate(rows, start=1):
        image = r["Image Index"].strip()
        if image in out:
            raise InputError(p, f"duplicate image {image!r}", row=i)
        labels = [s.strip() for s in r["Finding Labels"].split("|") if s.strip()]
        out[image] = sorted(lb for lb in labels if lb != "No Finding")
    return out
