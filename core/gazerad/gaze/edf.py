"""EyeLink EDF importer (:func:`load_edf`), through the optional ``eyelinkio`` package.

The validation rules and the ``dropped`` reason keys are those of :mod:`gazerad.gaze.importers`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gazerad.errors import InputError
from gazerad.gaze._checks import Checker, PathLike
from gazerad.gaze.record import GazeCollection

__all__ = ["load_edf"]


def _import_eyelinkio() -> Any:
    try:
        import eyelinkio
    except ImportError:
        raise ImportError("reading EyeLink EDF files needs the optional package eyelinkio: pip install 'gazerad[edf]'") from None
    return eyelinkio


def load_edf(
    path: PathLike,
    image_id: str,
    screen_to_image: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | tuple[float, float, float, float],
    image_size: tuple[int, int] | None = None,
    reader_id: str = "",
    strict: bool = False,
    with_samples: bool = False,
    eye: Literal["auto", "left", "right"] = "auto",
    time_window: tuple[float, float] | None = None,
) -> GazeCollection:
    """Load the fixations of an EyeLink ``.edf`` recording as one record (needs ``eyelinkio``).

    The fixations are the EDF's own discrete fixation events (``stime``, ``etime`` in s from
    the start of the recording; ``axp``, ``ayp`` mean position in screen pixels). Raw
    samples (``xpos``/``ypos``, NaN while the eye is lost) are read when ``with_samples``.

    Args:
        path: the ``.edf`` file.
        image_id: id of the image shown.
        screen_to_image: either a callable ``(x_screen, y_screen) -> (x_img, y_img)`` taking
            and returning arrays, or a tuple ``(scale_x, scale_y, offset_x, offset_y)``
            meaning ``x_img = scale_x * x_screen + offset_x`` and
            ``y_img = scale_y * y_screen + offset_y``.
        image_size: ``(height, width)`` of the image; points outside it are dropped
            (without it only negative coordinates are).
        reader_id: the reader.
        strict: raise on the first bad fixation instead of dropping it.
        with_samples: also read raw samples into ``record.samples`` ``[t, x, y]`` (mapped).
        eye: for binocular recordings, which eye's events and samples to use; ``"auto"``
            uses the recorded eye, and the left eye of binocular recordings.
        time_window: ``(t0, t1)`` in s: keep fixations starting in ``[t0, t1)`` (and samples
            in it) and rebase times to ``t0`` - for recordings that show several images.

    The "row" of an error is the 1-based index of the fixation event in the EDF.

    Raises:
        ImportError: ``eyelinkio`` is not installed.
        InputError: the file is missing or unreadable, has no fixation events, or (strict)
            a fixation is bad.
    """
    eyelinkio = _import_eyelinkio()
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "file does not exist")
    mapper = _edf_mapper(screen_to_image)
    try:
        edf = eyelinkio.read_edf(str(p))
    except Exception as e:  # eyelinkio raises bare exceptions for corrupt files
        raise InputError(p, f"cannot read EyeLink EDF ({type(e).__name__}: {e})") from None
    info = edf["info"]
    recorded = str(info.get("eye", "")).upper()
    if eye == "auto":
        eye_name = "right" if recorded.startswith("RIGHT") else "left"
    elif eye in ("left", "right"):
        eye_name = eye
    else:
        raise InputError(None, f"eye must be 'auto', 'left' or 'right', got {eye!r}")
    if recorded in ("LEFT_EYE", "RIGHT_EYE") and not recorded.startswith(eye_name.upper()):
        raise InputError(p, f"recorded {recorded}, no data for the {eye_name} eye")
    fixev = edf["discrete"].get("fixations")
    if fixev is None or len(fixev) == 0:
        raise InputError(p, "no fixation events in the EDF (were events recorded?)")
    coll = GazeCollection()
    chk = Checker(coll, p, strict)
    t_shift = 0.0
    sel = np.ones(len(fixev), dtype=bool)
    if recorded == "BINOCULAR":
        sel &= fixev["eye"] == (0 if eye_name == "left" else 1)
    if time_window is not None:
        t_shift = float(time_window[0])
        sel &= (fixev["stime"] >= time_window[0]) & (fixev["stime"] < time_window[1])
    idx = np.flatnonzero(sel)
    xs, ys = mapper(fixev["axp"][idx].astype(np.float64), fixev["ayp"][idx].astype(np.float64))
    fix = []
    for k, x, y in zip(idx, np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)):
        row = int(k) + 1
        v = chk.numbers(row, [("x", x), ("y", y), ("stime", fixev["stime"][k] - t_shift), ("etime", fixev["etime"][k] - t_shift)])
        if v is not None and chk.accept(row, *v, image_size):
            fix.append(tuple(v))
    samples = None
    if with_samples:
        samples = _edf_samples(edf, eye_name, recorded, mapper, time_window)
    screen = {"screen_coords": [int(c) for c in np.asarray(info.get("screen_coords", [])).ravel()], "eye": eye_name}
    chk.add(fix, image_id, reader_id, image_size=image_size, samples=samples, screen=screen)
    return coll


def _edf_mapper(
    screen_to_image: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | tuple[float, float, float, float],
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    if callable(screen_to_image):
        return screen_to_image
    try:
        sx, sy, ox, oy = (float(v) for v in screen_to_image)
    except (TypeError, ValueError):
        raise InputError(None, f"screen_to_image must be a callable or (scale_x, scale_y, offset_x, offset_y), got {screen_to_image!r}") from None
    return lambda x, y: (sx * x + ox, sy * y + oy)


def _edf_samples(
    edf: Any,
    eye_name: str,
    recorded: str,
    mapper: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    time_window: tuple[float, float] | None,
) -> np.ndarray:
    fields = list(edf["info"]["sample_fields"])
    suffix = f"_{eye_name}" if recorded == "BINOCULAR" else ""
    s = edf["samples"]
    x = np.asarray(s[fields.index("xpos" + suffix)], dtype=np.float64)
    y = np.asarray(s[fields.index("ypos" + suffix)], dtype=np.float64)
    t = np.asarray(edf["times"], dtype=np.float64)
    if time_window is not None:
        keep = (t >= time_window[0]) & (t < time_window[1])
        t, x, y = t[keep] - time_window[0], x[keep], y[keep]
    xi, yi = mapper(x, y)
    return np.column_stack([t, np.asarray(xi, dtype=float), np.asarray(yi, dtype=float)])
