"""Pictures people look at: a study with its finding boxes and readers' scanpaths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gazerad.errors import InputError

__all__ = ["display_window", "study_preview"]

_READER_COLOURS = ["#00d0ff", "#ffd000", "#7dff5a", "#ff66d9", "#ff9a3c"]


def display_window(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Percentile window of an image to ``[0, 1]`` for display."""
    lo, hi = np.percentile(image, [low, high])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def study_preview(
    studies: str | os.PathLike,
    out: str | os.PathLike,
    image_id: str | None = None,
    dpi: int = 110,
    gaze: str | os.PathLike | None = None,
) -> Path:
    """Write a PNG of one study: image, finding boxes (red, labelled) and every reader's
    scanpath (fixations as circles sized by duration, joined in time order).

    Args:
        studies: a study folder written by :func:`gazerad.synth.generate_studies`
            (or any folder in that layout), or an NIH / MIMIC-CXR(-JPG) root.
        out: PNG path (written atomically).
        image_id: the ``Image Index`` to show; default: the first image with both a
            finding and a reading, else the first image. ``labels.csv`` and the image are
            read through :class:`gazerad.data.study.StudyFolder`.

    Returns:
        The PNG path.

    ``gaze``: readings to draw (any :func:`~gazerad.gaze.importers.load_gaze` source;
    default the study folder's own ``reflacx/main_data``, none for a data-set root).
    """
    from matplotlib.patches import Rectangle

    from gazerad.data import read_bbox_list
    from gazerad.data.layouts import open_study_folder
    from gazerad.data.study import image_id_of
    from gazerad.engine.runlog import new_figure, save_figure
    from gazerad.gaze.importers import load_gaze, load_reflacx
    from gazerad.io.xray import read_xray

    root = Path(studies)
    folder = open_study_folder(root)
    table = folder.table
    labels = dict(zip(table.names, table.findings))
    bpath = root / "BBox_List_2017.csv"
    boxes = read_bbox_list(bpath) if bpath.is_file() else {}
    if gaze is not None:
        coll = load_gaze(gaze)
    elif (root / "reflacx" / "main_data").is_dir():
        coll = load_reflacx(root / "reflacx" / "main_data", strict=True)
    else:
        coll = {}
    by_id = {image_id_of(n): n for n in table.names}
    readings = {by_id.get(image_id_of(img), img): coll[img] for img in coll}
    if image_id is None:
        with_both = [i for i in labels if i in boxes and i in readings]
        image_id = with_both[0] if with_both else next(iter(labels))
    if image_id not in labels:
        raise InputError(folder.labels_csv, f"image {image_id!r} is not in the study set")
    image, meta = read_xray(folder.image_path(image_id))
    h, w = image.shape

    fig = new_figure((6.4, 6.4 * h / w + 0.5), dpi=dpi)
    ax = fig.add_subplot()
    ax.imshow(display_window(image), cmap="gray", vmin=0, vmax=1, extent=(0, w, h, 0), interpolation="lanczos")
    for label, (x, y, bw, bh) in boxes.get(image_id, []):
        ax.add_patch(Rectangle((x, y), bw, bh, fill=False, edgecolor="red", linewidth=1.6))
        ax.text(x, y - 3, label, color="red", fontsize=8, va="bottom", weight="bold")
    for k, r in enumerate(sorted(readings.get(image_id, []), key=lambda r: r.reader_id)):
        fx = r.fixations
        colour = _READER_COLOURS[k % len(_READER_COLOURS)]
        dur = fx[:, 3] - fx[:, 2]
        ax.plot(fx[:, 0], fx[:, 1], "-", color=colour, linewidth=0.7, alpha=0.6)
        name = r.reader_id or r.screen["reading_id"]
        ax.scatter(
            fx[:, 0], fx[:, 1], s=400 * dur, facecolors="none", edgecolors=colour, linewidths=1.0, label=f"{name}: {len(fx)} fixations, {dur.sum():.1f} s"
        )
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    found = ", ".join(labels[image_id]) or "No Finding"
    ax.set_title(f"{image_id} - {found}", fontsize=10)
    ax.set_xlabel("x (column, px)")
    ax.set_ylabel("y (row, px)")
    if readings.get(image_id):
        ax.legend(loc="lower center", fontsize=7, framealpha=0.7, title="circle area ~ fixation duration", title_fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out)
