"""Render what the GazeRad Slicer module shows for one study, from a live server, as a PNG.

Uses the module's own conversions (GazeRadLib): the heatmap volume and colour table of the
attention overlay, the ROI markups of the localisation (drawn back in pixels through the
inverse of their IJK-to-RAS, so the picture also checks the markups' geometry), the score
table and, when the study has gaze, the scanpath markups. Only the drawing (matplotlib,
Pillow/pydicom to read the image) is outside what Slicer itself does.

    python slicer_extension/make_example.py --url http://127.0.0.1:8000 --image 00040 \
        [--gaze reading.csv --reader dr_demo] --out docs/images/slicer_overlay.png
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "GazeRad"))

from GazeRadLib import (  # noqa: E402
    GazeRadClient,
    colour_table,
    heatmap_volume,
    roi_markups,
    scanpath_markups,
    score_table,
)


def _read_image(path: str) -> np.ndarray:
    if path.lower().endswith(".dcm"):
        import pydicom

        ds = pydicom.dcmread(path)
        a = ds.pixel_array.astype(np.float64)
        return a.max() - a if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1" else a
    from PIL import Image

    return np.asarray(Image.open(path)).astype(np.float64)


def _ras_to_pixel(p, ijk_to_ras) -> tuple[float, float]:
    ijk = np.linalg.inv(np.asarray(ijk_to_ras)) @ np.r_[p, 1.0]
    return float(ijk[0] + 0.5), float(ijk[1] + 0.5)  # voxel index -> continuous pixel coordinates


def render(url: str, image_id: str, out: str, gaze: str | None = None, reader: str | None = None, opacity: float = 0.5, min_score: float = 0.3) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Rectangle

    client = GazeRadClient(url)
    if gaze:
        client.upload_gaze(image_id, gaze, reader=reader, replace=True)
    with tempfile.TemporaryDirectory() as tmp:
        img = _read_image(client.download_image(image_id, tmp))
    nrrd, att = client.attention(image_id)
    hv = heatmap_volume(nrrd)
    loc = client.localization(image_id, min_score=min_score)
    mk = roi_markups(loc["boxes"], ijk_to_ras=hv.ijk_to_ras)
    table = score_table(loc)
    stored = client.gaze(image_id)

    lo, hi = np.percentile(img, [1, 99.5])
    heat = hv.array[0]
    shown = np.ma.masked_less(heat, hv.threshold)  # Slicer: display threshold, below = transparent
    cmap = ListedColormap(np.asarray(colour_table(256)), name="GazeRad heat")

    fig, axes = plt.subplots(1, 2, figsize=(11, 6.2), dpi=110)
    for ax in axes:
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="bilinear")
        ax.set_axis_off()
    axes[0].imshow(shown, cmap=cmap, vmin=hv.value_range[0], vmax=hv.value_range[1], alpha=opacity, interpolation="bilinear")
    top = sorted(att["regions"].items(), key=lambda kv: -kv[1])[:2]
    axes[0].set_title("Predicted attention (overlay, opacity %.1f)\nmost: %s" % (opacity, ", ".join(f"{k} {100 * v:.0f} %" for k, v in top)), fontsize=10)

    for m in mk["markups"]:
        cx, cy = _ras_to_pixel(m["center"], hv.ijk_to_ras)
        w, h = m["size"][0] / hv.geometry.spacing[0], m["size"][1] / hv.geometry.spacing[1]
        col = m["display"]["color"]
        axes[1].add_patch(Rectangle((cx - w / 2, cy - h / 2), w, h, fill=False, lw=2, ec=col))
        axes[1].text(cx - w / 2, cy - h / 2 - 2, m["name"], color=col, fontsize=9, va="bottom", bbox={"facecolor": "black", "alpha": 0.55, "pad": 1.5, "lw": 0})
    title = "Findings (ROIs with score)"
    if stored:
        sp = scanpath_markups(stored, ijk_to_ras=hv.ijk_to_ras)
        curve, points = sp["markups"][0], sp["markups"][1]
        xy = np.array([_ras_to_pixel(c["position"], hv.ijk_to_ras) for c in curve["controlPoints"]])
        axes[1].plot(xy[:, 0], xy[:, 1], "-", color=curve["display"]["color"], lw=1, alpha=0.8)
        axes[1].scatter(xy[:, 0], xy[:, 1], s=14, color=points["display"]["color"], zorder=3)
        title += f" and scanpath of {stored['records'][0]['reader_id']}"
    axes[1].set_title(title, fontsize=10)
    classes = [r for r in table["rows"] if r[1] == "class"]
    fig.text(
        0.5,
        0.03,
        "Class probabilities: " + ",  ".join(f"{r[0]} {r[2]:.2f}" for r in classes) + f"     (study {image_id}; model {att.get('model_version', '?')})",
        ha="center",
        fontsize=9,
    )
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.07, wspace=0.03)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, facecolor="white")
    plt.close(fig)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--image", required=True, help="study id (image file name without extension)")
    ap.add_argument("--gaze", help="a gaze recording to upload for the study first (replaces its stored gaze)")
    ap.add_argument("--reader", help="reader id for --gaze")
    ap.add_argument("--min-score", type=float, default=0.3)
    ap.add_argument("--out", default="docs/images/slicer_overlay.png")
    a = ap.parse_args(argv)
    print(render(a.url, a.image, a.out, gaze=a.gaze, reader=a.reader, min_score=a.min_score))
    return 0


if __name__ == "__main__":
    sys.exit(main())
