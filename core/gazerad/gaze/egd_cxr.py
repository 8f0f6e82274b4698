"""EGD-CXR importer (:func:`load_egd_cxr`): Gazepoint ``fixations.csv`` and the master sheet.

The schema and the coordinate mapping are in :func:`load_egd_cxr`; the validation rules and
the ``dropped`` reason keys are those of :mod:`gazerad.gaze.importers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gazerad.data._table import read_rows
from gazerad.errors import InputError
from gazerad.gaze._checks import Checker, ImageSizes, PathLike, find_column, size_for
from gazerad.gaze.record import GazeCollection

__all__ = ["EGD_SCREEN", "EGD_KERNEL_PX", "egd_sigma", "load_egd_cxr"]

#: Screen of the EGD-CXR experiment, ``(width, height)`` in pixels.
EGD_SCREEN = (1920, 1080)
#: EGD-CXR's own heatmaps draw each fixation with sigma = 150 pixels of that screen.
EGD_KERNEL_PX = 150.0

_EGD_REQUIRED = ["DICOM_ID", "FPOGX", "FPOGY", "FPOGS", "FPOGD", "FPOGV"]
_PAD_COLUMNS = ["image_top_pad", "image_bottom_pad", "image_left_pad", "image_right_pad"]


def _egd_paddings(master_sheet_csv: PathLike) -> dict[str, dict[str, float]]:
    path = Path(master_sheet_csv)
    header, rows = read_rows(path, [])
    idcol = find_column(header, "dicom_id")
    if idcol is None:
        raise InputError(path, f"missing column 'dicom_id'; found {[h for h in header if h]}")
    pads = {c: find_column(header, c) for c in _PAD_COLUMNS}
    missing = [c for c, h in pads.items() if h is None]
    if missing:
        raise InputError(path, f"missing column(s) {missing}; found {[h for h in header if h]}")
    out: dict[str, dict[str, float]] = {}
    first: dict[str, int] = {}
    chk = Checker(GazeCollection(), path, True)
    for i, r in enumerate(rows, start=1):
        dicom = r[idcol].strip()
        if dicom in first:
            raise InputError(path, f"second row for dicom_id {dicom!r} (first at row {first[dicom]})", row=i)
        first[dicom] = i
        vals = chk.numbers(i, [(c, r[h]) for c, h in pads.items()])
        assert vals is not None
        out[dicom] = _checked_paddings(path, i, dict(zip(_PAD_COLUMNS, vals)))
    return out


def _checked_paddings(path: Path, row: int, pads: dict[str, float], screen: tuple[int, int] = EGD_SCREEN) -> dict[str, float]:
    """``pads`` when they are >= 0 and leave a display area on the ``screen``."""
    if any(v < 0 for v in pads.values()):
        raise InputError(path, f"negative image padding {list(pads.values())}", row=row)
    if pads["image_left_pad"] + pads["image_right_pad"] >= screen[0] or pads["image_top_pad"] + pads["image_bottom_pad"] >= screen[1]:
        raise InputError(path, f"image paddings {list(pads.values())} leave no display area on the {screen[0]} x {screen[1]} screen", row=row)
    return pads


def _egd_screen_to_image(fx: float, fy: float, pads: Mapping[str, float], size: tuple[int, int], screen: tuple[int, int] = EGD_SCREEN) -> tuple[float, float]:
    """EGD-CXR screen fraction -> image pixel (see :func:`load_egd_cxr`)."""
    sw, sh = screen
    h, w = size
    area_w = sw - pads["image_left_pad"] - pads["image_right_pad"]
    area_h = sh - pads["image_top_pad"] - pads["image_bottom_pad"]
    s = min(area_w / w, area_h / h)
    x0 = pads["image_left_pad"] + (area_w - s * w) / 2.0
    y0 = pads["image_top_pad"] + (area_h - s * h) / 2.0
    return (fx * sw - x0) / s, (fy * sh - y0) / s


def egd_sigma(screen: Mapping[str, Any] | None, shape: tuple[int, int]) -> float | None:
    """EGD-CXR's heatmap kernel (:data:`EGD_KERNEL_PX` on the screen) in pixels of the
    ``(H, W)`` image, from a record's ``screen`` (its paddings; the image letterboxed into
    the display area at scale ``s``: ``EGD_KERNEL_PX / s``); ``None`` without paddings.
    EGD-CXR has no pixels-per-degree figure, so this is the kernel its readings get."""
    if not screen or not all(c in screen for c in _PAD_COLUMNS):
        return None
    h, w = shape
    area_w = screen.get("width", EGD_SCREEN[0]) - screen["image_left_pad"] - screen["image_right_pad"]
    area_h = screen.get("height", EGD_SCREEN[1]) - screen["image_top_pad"] - screen["image_bottom_pad"]
    s = min(area_w / w, area_h / h)
    return EGD_KERNEL_PX / s if s > 0 else None


def load_egd_cxr(
    fixations_csv: PathLike,
    master_sheet_csv: PathLike | None = None,
    image_sizes: ImageSizes | None = None,
    strict: bool = False,
) -> GazeCollection:
    """Load EGD-CXR ``fixations.csv`` (one radiologist, reader id ``"EGD"``).

    Schema of ``fixations.csv`` (Gazepoint): ``DICOM_ID``; ``FPOGX``, ``FPOGY`` fixation point
    as a fraction of the 1920 x 1080 screen; ``FPOGS`` start (s); ``FPOGD`` duration (s);
    ``FPOGV`` valid flag (0/1); optional ``X_ORIGINAL``, ``Y_ORIGINAL`` (original-image
    pixels, -1 when the point is outside the image) and ``FPOGID`` (fixation id).
    ``master_sheet.csv``: ``dicom_id`` and the image paddings on screen ``image_top_pad``,
    ``image_bottom_pad``, ``image_left_pad``, ``image_right_pad`` (screen pixels).

    Decisions:

    * Positions are ``X_ORIGINAL``/``Y_ORIGINAL`` when these columns exist. Otherwise the
      screen point ``(FPOGX * 1920, FPOGY * 1080)`` is mapped to the image: the display area
      is the screen minus the paddings, ``[left, 1920 - right] x [top, 1080 - bottom]``; the
      ``W x H`` image is letterboxed into it (uniform scale
      ``s = min(area_w / W, area_h / H)``, centred; with EGD's paddings the image fills the
      area exactly), so ``x = (X_screen - left - (area_w - s W) / 2) / s`` and likewise for y.
      This needs ``master_sheet_csv`` and ``image_sizes``.
    * ``image_sizes`` maps ``DICOM_ID -> (height, width)``; with it, points are checked
      against the image and ``record.image_size`` is set.
    * Times: ``t_start = FPOGS``, ``t_end = FPOGS + FPOGD``, on the tracker's clock (not
      rebased to the image onset).
    * When ``FPOGID`` repeats within an image (Gazepoint writes a growing fixation over
      several rows), the row with the longest ``FPOGD`` is kept for that fixation.
    * ``FPOGV == 0`` rows are dropped as ``"invalid"``, ``X_ORIGINAL == -1`` (or a mapped
      point off the image) as ``"outside_image"``; ``FPOGV`` other than 0 or 1 (Gazepoint's
      valid flag has no other value) as ``"bad_flag"``.
    * With ``master_sheet_csv``, every ``DICOM_ID`` needs exactly one master-sheet row, with
      paddings that leave a display area on the screen.

    Raises:
        InputError: missing columns, no way to get image coordinates, an id unknown to
            ``image_sizes`` or the master sheet, a repeated or unusable master-sheet row, an
            image id that is not a plain name, or (strict) a bad row.
    """
    path = Path(fixations_csv)
    header, rows = read_rows(path, _EGD_REQUIRED)
    has_orig = "X_ORIGINAL" in header and "Y_ORIGINAL" in header
    pads: dict[str, dict[str, float]] | None = None
    if not has_orig:
        if master_sheet_csv is None or image_sizes is None:
            raise InputError(
                path,
                "no X_ORIGINAL/Y_ORIGINAL columns: pass master_sheet_csv (paddings) and image_sizes {dicom_id: (H, W)} to map screen coordinates to the image",
            )
    if master_sheet_csv is not None:
        pads = _egd_paddings(master_sheet_csv)  # also with X_ORIGINAL: the heatmap kernel needs the display scale
    coll = GazeCollection()
    chk = Checker(coll, path, strict)
    has_id = "FPOGID" in header
    per_image: dict[str, dict[Any, tuple[int, float, tuple[float, float, float, float]]]] = {}
    sizes: dict[str, tuple[int, int] | None] = {}
    first: dict[str, int] = {}
    for i, r in enumerate(rows, start=1):
        dicom = r["DICOM_ID"].strip()
        if not dicom:
            chk.fail("missing_value", "column 'DICOM_ID' is empty", i)
            continue
        if dicom not in sizes:
            first[dicom] = i
            chk.image_id(dicom, i)
            sizes[dicom] = size_for(path, image_sizes, dicom, row=i)
            if pads is not None and dicom not in pads:
                raise InputError(master_sheet_csv, f"no row for DICOM_ID {dicom!r} (used in {path}, row {i})")
        size = sizes[dicom]
        valid = chk.flag(i, "FPOGV", r["FPOGV"])
        v = None if valid is None else chk.numbers(i, [(c, r[c]) for c in ("FPOGS", "FPOGD")])
        if v is None:
            continue
        t0, dur = v
        if valid == 0:
            chk.fail("invalid", "fixation marked invalid (FPOGV = 0)", i)
            continue
        if has_orig:
            xy = chk.numbers(i, [("X_ORIGINAL", r["X_ORIGINAL"]), ("Y_ORIGINAL", r["Y_ORIGINAL"])])
            if xy is None:
                continue
            x, y = xy
        else:
            fxy = chk.numbers(i, [("FPOGX", r["FPOGX"]), ("FPOGY", r["FPOGY"])])
            if fxy is None:
                continue
            assert pads is not None and size is not None
            x, y = _egd_screen_to_image(fxy[0], fxy[1], pads[dicom], size)
        if not chk.accept(i, x, y, t0, t0 + dur, size):
            continue
        fid: Any = r["FPOGID"].strip() if has_id and r["FPOGID"].strip() else ("row", i)
        fixes = per_image.setdefault(dicom, {})
        if fid not in fixes or dur > fixes[fid][1]:
            fixes[fid] = (i, dur, (x, y, t0, t0 + dur))
    for dicom in sizes:
        fixes = per_image.get(dicom, {})
        screen: dict[str, Any] = {"width": EGD_SCREEN[0], "height": EGD_SCREEN[1]}
        if pads is not None:
            screen.update(pads.get(dicom, {}))
        chk.add([f for _, _, f in fixes.values()], dicom, "EGD", row=first[dicom], image_size=sizes[dicom], screen=screen)
    return coll
