"""Obvious-mass study sets for KACL and server tests: phantom chests, half with one bright
disc ("Mass") in a lung field; labels.csv, BBox_List_2017.csv, and simulated gaze that
dwells on the mass."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from gazerad.synth.phantom import render, sample_spec

SIZE = 128


def mass_studies(root: Path, n: int = 96, seed: int = 0, size: int = SIZE) -> Path:
    """Phantom chests without findings; half get one obvious mass (a bright disc, r 9-14 px)
    in a lung field. Written in the study layout: images/, labels.csv, BBox_List_2017.csv."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    yy, xx = np.mgrid[0:size, 0:size]
    labels, boxes = [], []
    for i in range(n):
        r = render(sample_spec(rng, size=size, n_findings=0))
        img = r.image.astype(np.float64)
        has = i % 2 == 0
        if has:
            lung = np.argwhere(r.lungs)
            for _ in range(50):
                cy, cx = lung[rng.integers(len(lung))]
                rad = rng.uniform(9, 14)
                disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= rad * rad
                if (r.lungs | ~disc).all():
                    break
            img = img + disc * (np.percentile(img, 99) - np.percentile(img, 20)) * 0.8
            boxes.append((f"{i:05d}.png", "Mass", int(cx - rad), int(cy - rad), int(2 * rad + 1), int(2 * rad + 1)))
        img = np.clip(img, 0, 65535).astype(np.uint16)
        Image.fromarray(img).save(root / "images" / f"{i:05d}.png")
        split = "train" if i < int(0.7 * n) else "test"
        labels.append((f"{i:05d}.png", "Mass" if has else "No Finding", split, int(has), 0))
    with (root / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Image Index", "Finding Labels", "split", "Mass", "Nodule"])
        w.writerows(labels)
    with (root / "BBox_List_2017.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"])
        w.writerows(boxes)
    return root


def mass_boxes(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """``{file name: (x, y, w, h)}`` of the masses of a :func:`mass_studies` set."""
    with (root / "BBox_List_2017.csv").open() as f:
        rows = list(csv.reader(f))[1:]
    return {r[0]: tuple(int(v) for v in r[2:6]) for r in rows}


def simulated_gaze_csv(path: Path, box: tuple[int, int, int, int] | None, size: int = SIZE, seed: int = 0, n: int = 30) -> Path:
    """A generic gaze CSV (x, y, t_start, t_end in s): 60 % of fixations on the mass (if
    any), the rest spread over the central image."""
    rng = np.random.default_rng(seed)
    rows, t = [], 0.0
    for k in range(n):
        if box is not None and k % 5 < 3:
            x = box[0] + box[2] / 2 + rng.normal(0, box[2] / 5)
            y = box[1] + box[3] / 2 + rng.normal(0, box[3] / 5)
        else:
            x, y = rng.uniform(0.15 * size, 0.85 * size, 2)
        x, y = float(np.clip(x, 0, size - 1)), float(np.clip(y, 0, size - 1))
        d = float(rng.uniform(0.15, 0.45))
        rows.append((round(x, 2), round(y, 2), round(t, 3), round(t + d, 3)))
        t += d + 0.04
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x", "y", "t_start", "t_end"])
        w.writerows(rows)
    return path
