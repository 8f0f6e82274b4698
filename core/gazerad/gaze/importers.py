"""Importers for public gaze data formats, producing :class:`~gazerad.gaze.record.GazeCollection`.

Every importer returns a :class:`GazeCollection` of :class:`GazeRecord` in the
:mod:`gazerad.coords` convention: ``x`` = column, ``y`` = row, origin at the top-left corner
of the original image, original-image pixels; times in seconds. Fixations of a record are
sorted by start time.

Supported formats (see each function for the exact schema):

* **REFLACX** (:func:`load_reflacx`): a ``main_data`` folder with ``metadata_phase_*.csv``
  and one folder per reading holding ``fixations.csv`` (and ``gaze.csv``).
* **EGD-CXR** (:func:`load_egd_cxr`): ``fixations.csv`` (Gazepoint ``FPOG*`` columns) and
  optionally ``master_sheet.csv`` (screen paddings).
* **McGIP** (:func:`load_mcgip_csv`, :func:`load_mcgip_json`): gaze samples on an
  ``800 x 800`` canvas without timestamps.
* **Generic CSV** (:func:`load_generic_csv`): one row per fixation, columns named by the caller.
* **EyeLink EDF** (:func:`load_edf`): through the optional ``eyelinkio`` package.
* :func:`load_gaze` guesses the format from the path's layout and content.

Each format has its own module (:mod:`~gazerad.gaze.reflacx`, :mod:`~gazerad.gaze.egd_cxr`,
:mod:`~gazerad.gaze.mcgip`, :mod:`~gazerad.gaze.generic_csv`, :mod:`~gazerad.gaze.edf`; the
shared row checks are in ``gazerad.gaze._checks``); this module holds :func:`load_gaze` and
re-exports the loaders, so ``from gazerad.gaze.importers import load_reflacx`` keeps working.

Validation
----------
Missing files or columns, malformed metadata and unknown ids always raise
:class:`~gazerad.errors.InputError` naming the file (and the 1-based data row where there is
one); so do image and reading ids that are not plain names (every id passes
:func:`gazerad.data.study.check_image_id` when its record is added to the collection),
repeated REFLACX readings and repeated or missing EGD-CXR master-sheet rows. Numbers are
read by one parser (``gazerad.gaze._checks.parse_float``: no ``1_0``). Problems in single
fixation rows depend on ``strict``:

* ``strict=True``: the first bad row raises :class:`InputError` naming file and row;
* ``strict=False`` (default): the row is dropped and counted in ``collection.dropped``
  under one of these reason keys:

  ``"missing_value"``   an empty or NaN field;
  ``"non_numeric"``     a field that is not a number;
  ``"negative_duration"`` a fixation ending before it starts (or a negative duration);
  ``"implausible_time"`` times outside ``0 <= t_start <= t_end <= 24 h`` (the rule of
  uploads, :data:`gazerad.gaze.store.MAX_SECONDS`);
  ``"outside_image"``   a point outside the image (``0 <= x < W``, ``0 <= y < H``; when the
  image size is unknown only ``x >= 0`` and ``y >= 0`` are checked);
  ``"invalid"``         a point the tracker marked invalid (EGD-CXR ``FPOGV == 0``);
  ``"bad_flag"``        a 0/1 flag with another value (EGD-CXR ``FPOGV = 0.5``);
  ``"bad_pixels_per_degree"`` a REFLACX angular-resolution value that is not a number in
  ``(0, 10000]`` (the value is ignored, the fixation kept; empty values are ignored uncounted);
  ``"empty_record"``    a record left with no valid fixation (the record is not added);
  ``"discarded_reading"`` a REFLACX reading with ``eye_tracking_data_discarded`` true;
  ``"missing_file"``    a REFLACX reading folder without ``fixations.csv`` (or without
  ``gaze.csv`` when samples are requested: the record is kept, without samples);
  ``"bad_metadata"``    a metadata row with an empty id, an unusable image size (not whole,
  not positive, or over ``gazerad.io.xray.MAX_PIXELS`` pixels) or an
  ``eye_tracking_data_discarded`` that is not a boolean spelling (reading skipped);
  ``"bad_sample"``      a raw sample with a non-numeric field (REFLACX ``gaze.csv``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gazerad.errors import InputError
from gazerad.gaze._checks import PathLike
from gazerad.gaze.edf import load_edf
from gazerad.gaze.egd_cxr import EGD_SCREEN, load_egd_cxr
from gazerad.gaze.formats import sniff_gaze_file
from gazerad.gaze.generic_csv import load_generic_csv
from gazerad.gaze.mcgip import MCGIP_CANVAS, MCGIP_SAMPLE_DURATION, load_mcgip_csv, load_mcgip_json
from gazerad.gaze.record import GazeCollection
from gazerad.gaze.reflacx import load_reflacx

__all__ = [
    "EGD_SCREEN",
    "MCGIP_CANVAS",
    "MCGIP_SAMPLE_DURATION",
    "load_reflacx",
    "load_egd_cxr",
    "load_mcgip_csv",
    "load_mcgip_json",
    "load_generic_csv",
    "load_edf",
    "load_gaze",
]

_LOADERS: dict[str, Callable[..., GazeCollection]] = {
    "reflacx": load_reflacx,
    "egd": load_egd_cxr,
    "mcgip_csv": load_mcgip_csv,
    "mcgip_json": load_mcgip_json,
    "generic": load_generic_csv,
    "edf": load_edf,
}


def _detect(p: Path, kw: Mapping[str, Any]) -> str:
    if p.is_dir():
        if any(p.glob("metadata_phase_*.csv")):
            return "reflacx"
        if any(p.glob("*.json")):
            return "mcgip_json"
        raise InputError(p, "cannot tell the gaze format: neither a REFLACX main_data folder nor a folder of McGIP JSON")
    if not p.is_file():
        raise InputError(p, "file does not exist")
    if p.name.startswith("metadata_phase_") and p.suffix.lower() == ".csv":
        return "reflacx"  # a file of the REFLACX folder layout: the folder is read
    if "columns" in kw:
        return "generic"
    fmt = sniff_gaze_file(p)
    if fmt not in _LOADERS or fmt == "generic":  # generic: its columns are not known without columns=
        hint = (
            "read the REFLACX main_data folder (load_reflacx), or upload the file to the server"
            if fmt == "reflacx_fixations"
            else "a generic CSV needs columns= (x, y, t_start, t_end, image)"
            if fmt == "generic"
            else "GazeRad's own JSON: gazerad.gaze.store.read_gaze_json reads it"
        )
        raise InputError(p, f"this is a {fmt} file: {hint}")
    return fmt


def load_gaze(path: PathLike, format: str = "auto", **kw: Any) -> GazeCollection:
    """Load gaze data of any supported format.

    ``format="auto"`` decides by layout and content: a study folder written by
    ``gazerad synth`` reads its ``reflacx/main_data``, a REFLACX download its ``main_data``;
    an EGD-CXR download (``fixations.csv`` beside ``master_sheet.csv``) is EGD-CXR; a folder with ``metadata_phase_*.csv``
    (or such a file) is REFLACX (the folder is passed to :func:`load_reflacx`); a folder of
    ``*.json`` or a ``.json`` file is McGIP JSON; ``.edf`` is EyeLink; a CSV whose header has
    ``DICOM_ID``, ``FPOGX``, ``FPOGY`` is EGD-CXR; a ``;``-separated line with >= 3 fields is
    McGIP CSV; with ``columns=`` a CSV is generic. Explicit formats: ``"reflacx"``, ``"egd"``,
    ``"mcgip_csv"``, ``"mcgip_json"``, ``"generic"``, ``"edf"``.

    Args:
        path: file or folder.
        format: ``"auto"`` or one of the explicit formats.
        **kw: passed to the format's loader (e.g. ``image_id`` and ``screen_to_image`` for EDF).

    Raises:
        InputError: unknown format, or a layout that matches none.
    """
    p = Path(path)
    # a GazeRad study folder (gazerad synth) keeps its gaze under reflacx/main_data; the
    # REFLACX download under main_data (beside gaze_data)
    for sub in (("reflacx", "main_data"), ("main_data",)):
        if p.is_dir() and format in ("auto", "reflacx") and any(p.joinpath(*sub).glob("metadata_phase_*.csv")):
            p = p.joinpath(*sub)
            break
    # the EGD-CXR download: fixations.csv beside master_sheet.csv
    if p.is_dir() and format in ("auto", "egd") and (p / "fixations.csv").is_file() and (p / "master_sheet.csv").is_file():
        kw.setdefault("master_sheet_csv", p / "master_sheet.csv")
        return load_egd_cxr(p / "fixations.csv", **kw)
    fmt = _detect(p, kw) if format == "auto" else format
    if fmt not in _LOADERS:
        raise InputError(None, f"unknown gaze format {format!r}; expected 'auto' or one of {sorted(_LOADERS)}")
    if fmt == "reflacx" and p.is_file():
        p = p.parent
    return _LOADERS[fmt](p, **kw)
