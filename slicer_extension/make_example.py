"""Render what the GazeRad Slicer module shows for one study, from a live server, as a PNG.

Drawn by 3D Slicer's own MRML core (the ``slicer-core`` wheel, no Qt): the module's logic
(:class:`GazeRadLib.scene.SceneLogic`) loads the study, the attention overlay, the
localisation ROIs and the stored scanpath into a scene exactly as the module does, and
Slicer's slice logic and markups displayable manager draw two slice views offscreen
(:meth:`SceneLogic.renderSliceView`). Only the side-by-side layout and the caption are
Pillow's.

    python slicer_extension/make_example.py --url http://127.0.0.1:8000 --image 00000019_000 \
        [--gaze reading.csv --reader dr_demo] --out docs/images/slicer_overlay.png
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "GazeRad"))


def render(url: str, image_id: str, out: str, gaze: str | None = None, reader: str | None = None, opacity: float = 0.5, min_score: float = 0.5) -> str:
    import slicer
    from PIL import Image, ImageDraw

    from GazeRadLib import localization_status
    from GazeRadLib.scene import SceneLogic

    with tempfile.TemporaryDirectory() as tmp:
        logic = SceneLogic(slicer.vtkMRMLScene(), tmp)
        logic.connect(url)
        image = logic.loadStudy(image_id)
        if gaze:
            logic.importGaze(image, gaze, reader=reader, replace=True)
        heat, att = logic.showAttention(image, opacity=opacity)
        rois, _, table, res = logic.showLocalization(image, minScore=min_score, topK=0 if min_score <= 0 else 1)
        stored = logic.client.gaze(image_id)
        scan = logic.showScanpath(image, stored) if stored else []
        for n in (*rois, *scan):  # the attention view shows the overlay only
            n.GetDisplayNode().SetVisibility(0)
        left = Image.open(logic.renderSliceView(os.path.join(tmp, "a.png"), image, heat, opacity=opacity)).convert("RGB")
        for n in (*rois, *scan):
            n.GetDisplayNode().SetVisibility(1)
        right = Image.open(logic.renderSliceView(os.path.join(tmp, "b.png"), image)).convert("RGB")
    w, h = left.size
    sheet = Image.new("RGB", (2 * w + 10, h + 64), "white")
    sheet.paste(left, (0, 40))
    sheet.paste(right, (w + 10, 40))
    d = ImageDraw.Draw(sheet)
    top = sorted(att["regions"].items(), key=lambda kv: -kv[1])[:2]
    d.text((6, 6), f"Predicted attention (opacity {opacity:.1f}); most: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in top), fill="black")
    boxes = localization_status(res, min_score)
    text = f"Findings: {boxes}" + (f"; scanpath of {stored['records'][0]['reader_id']}" if stored else "")
    d.text((w + 16, 4), text.replace("; ", ";\n", 1), fill="black")  # two lines: the header is one view wide
    classes = [r for r in table["rows"] if r[1] == "class"]
    d.text(
        (6, h + 46),
        "Class probabilities: " + ",  ".join(f"{r[0]} {r[2]:.2f}" for r in classes) + f"   (study {image_id}; drawn by Slicer's MRML core)",
        fill="black",
    )
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    sheet.save(out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--image", required=True, help="study id (image file name without extension)")
    ap.add_argument("--gaze", help="a gaze recording to upload for the study first (replaces its stored gaze)")
    ap.add_argument("--reader", help="reader id for --gaze")
    ap.add_argument("--min-score", type=float, default=0.5)
    ap.add_argument("--out", default="docs/images/slicer_overlay.png")
    a = ap.parse_args(argv)
    print(render(a.url, a.image, a.out, gaze=a.gaze, reader=a.reader, min_score=a.min_score))
    return 0


if __name__ == "__main__":
    sys.exit(main())
