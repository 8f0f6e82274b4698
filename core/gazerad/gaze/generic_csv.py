"""Generic CSV importer (:func:`load_generic_csv`): one fixation per row, columns named by the caller.

The validation rules and the ``dropped`` reason keys are those of :mod:`gazerad.gaze.importers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from gazerad.data._table import read_rows
from gazerad.errors import InputError
from gazerad.gaze._checks import Checker, ImageSizes, PathLike, size_for
from gazerad.gaze.record import GazeCollection

__all__ = ["load_generic_csv"]


def load_generic_csv(
    path: PathLike,
    columns: Mapping[str, str],
    delimiter: str = ",",
    time_unit: Literal["s", "ms"] = "s",
    image_sizes: ImageSizes | None = None,
    strict: bool = False,
) -> GazeCollection:
    """Load a CSV with one fixation per row and caller-named columns.

    Args:
        path: the CSV (with a header row).
        columns: maps roles to column names: ``"image"``, ``"x"``, ``"y"``, ``"t_start"``,
            and exactly one of ``"t_end"`` / ``"duration"``; optional ``"reader"``.
            ``x``/``y`` are original-image pixels (``x`` = column, ``y`` = row, origin top-left).
        delimiter: field separator.
        time_unit: ``"s"`` or ``"ms"`` for the time columns (converted to seconds).
        image_sizes: ``{image_id: (height, width)}``; when given, every image must be in it
            and points are checked against the image.
        strict: raise on the first bad row instead of dropping it.

    Rows are grouped by ``(image, reader)`` in order of first appearance; each group becomes
    one record sorted by start time (reader ``""`` without a reader column).

    Raises:
        InputError: bad ``columns``/``time_unit``, missing columns, an image unknown to
            ``image_sizes``, an image id that is not a plain name, or (strict) a bad row.
    """
    p = Path(path)
    roles = dict(columns)
    unknown = sorted(set(roles) - {"image", "x", "y", "t_start", "t_end", "duration", "reader"})
    if unknown:
        raise InputError(None, f"columns: unknown role(s) {unknown}")
    missing = [k for k in ("image", "x", "y", "t_start") if k not in roles]
    if missing:
        raise InputError(None, f"columns: missing role(s) {missing}")
    if ("t_end" in roles) == ("duration" in roles):
        raise InputError(None, "columns: give exactly one of 't_end' and 'duration'")
    if time_unit not in ("s", "ms"):
        raise InputError(None, f"time_unit must be 's' or 'ms', got {time_unit!r}")
    scale = 1e-3 if time_unit == "ms" else 1.0
    _, rows = read_rows(p, list(roles.values()), delimiter=delimiter)
    coll = GazeCollection()
    chk = Checker(coll, p, strict)
    end_role = "t_end" if "t_end" in roles else "duration"
    groups: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    first: dict[tuple[str, str], int] = {}
    sizes: dict[str, tuple[int, int] | None] = {}
    for i, r in enumerate(rows, start=1):
        image = r[roles["image"]].strip()
        reader = r[roles["reader"]].strip() if "reader" in roles else ""
        if not image:
            chk.fail("missing_value", f"column {roles['image']!r} is empty", i)
            continue
        if image not in sizes:
            sizes[image] = size_for(p, image_sizes, chk.image_id(image, i), row=i)
        groups.setdefault((image, reader), [])
        first.setdefault((image, reader), i)
        v = chk.numbers(i, [(roles[k], r[roles[k]]) for k in ("x", "y", "t_start", end_role)])
        if v is None:
            continue
        x, y, t0, t1 = v[0], v[1], v[2] * scale, v[3] * scale
        if end_role == "duration":
            t1 = t0 + t1
        if chk.accept(i, x, y, t0, t1, sizes[image]):
            groups[(image, reader)].append((x, y, t0, t1))
    for (image, reader), fix in groups.items():
        chk.add(fix, image, reader, row=first[(image, reader)], image_size=sizes[image])
    return coll
