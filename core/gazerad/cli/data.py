"""Study data: ``gazerad synth`` (synthetic studies), ``show`` (a study's picture), ``info`` (X-ray file metadata)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gazerad.cli._command import Command

__all__ = ["COMMANDS"]


def _add_synth(s: argparse.ArgumentParser) -> None:
    s.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    s.add_argument("--n", type=int, default=200, help="number of images (default 200)")
    s.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    s.add_argument(
        "--size",
        type=int,
        default=512,
        help="side of the generated images in px (default 512); not the model input side, which the training commands call --image-size",
    )
    s.add_argument("--dicom", action="store_true", help="also write DICOM DX copies (30%% MONOCHROME1)")
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing study set (atomically)")
    s.add_argument("--preview", metavar="PNG", help="also write a preview picture of one study")
    s.add_argument("--quiet", action="store_true", help="no progress bar")


def _synth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gazerad.synth.study import generate_studies

    if args.preview and Path(args.preview).is_dir():  # checked first: a failed preview must not follow a finished study set
        raise ValueError(f"--preview {args.preview} is a folder: give the path of a PNG file")
    s = generate_studies(
        args.out,
        n=args.n,
        seed=args.seed,
        size=args.size,
        dicom=args.dicom,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(
        f"wrote {s.n_images} studies ({s.n_readings} readings, {s.n_findings} findings, "
        f"{100 * s.no_finding_fraction:.0f}% No Finding) to {s.out} in {s.seconds:.1f} s"
    )
    if args.preview:
        from gazerad.viz import study_preview

        print(f"preview: {study_preview(s.out, args.preview)}")
    return 0


def _add_show(s: argparse.ArgumentParser) -> None:
    s.add_argument("--data", default=None, help="study folder (as written by 'gazerad synth'); required")
    s.add_argument("--studies", dest="data", help=argparse.SUPPRESS)  # the old name
    s.add_argument("--image", default=None, help="Image Index to show (default: one with findings and gaze)")
    s.add_argument("--gaze", default=None, help="gaze to draw (REFLACX or EGD-CXR download, ...; default: the study folder's own)")
    s.add_argument("--out", default=None, help="PNG path (default DATA/preview.png)")


def _show(args: argparse.Namespace) -> int:
    from gazerad.viz import study_preview

    if not args.data:
        raise ValueError("--data required")
    out = args.out or Path(args.data) / "preview.png"
    print(f"preview: {study_preview(args.data, out, image_id=args.image, gaze=args.gaze)}")
    return 0


def _add_info(s: argparse.ArgumentParser) -> None:
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument("--voi-lut", action="store_true", help="apply the DICOM VOI LUT / window")
    s.add_argument("--window", nargs=2, type=float, metavar=("CENTER", "WIDTH"), help="linear window to [0, 1]")


def _info(args: argparse.Namespace) -> int:
    from gazerad.io.xray import read_xray

    window = tuple(args.window) if args.window else None
    for path in args.paths:
        image, meta = read_xray(path, voi="lut" if args.voi_lut else None, window=window)
        meta = {k: v for k, v in meta.items() if k != "affine"}
        meta.update(min=float(image.min()), max=float(image.max()), mean=float(image.mean()))
        print(json.dumps(meta, default=str))
    return 0


def _add_datasets(s: argparse.ArgumentParser) -> None:
    s.add_argument("action", choices=["check"], help="check: detect the layout, count and check images, labels, boxes, splits, gaze")
    s.add_argument("root", metavar="ROOT", help="data folder: a study folder, an NIH ChestX-ray14 or a MIMIC-CXR(-JPG) root")
    s.add_argument("--gaze", default=None, help="gaze data to check against it (REFLACX or EGD-CXR download, main_data folder, gaze file)")
    s.add_argument("--deep", action="store_true", help="decode every image (default: read each file's header)")
    s.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")


def _datasets(args: argparse.Namespace) -> int:
    from gazerad.data.check import check_dataset, format_report

    rep = check_dataset(args.root, gaze=args.gaze, deep=args.deep)
    print(format_report(rep))
    if args.json:
        from gazerad.io.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(rep, indent=1))
    return 1 if rep["problems"] else 0


COMMANDS = (
    Command("synth", "generate synthetic chest X-ray studies with simulated radiologist gaze", _add_synth, _synth),
    Command("show", "picture of a study: finding boxes and readers' scanpaths", _add_show, _show),
    Command("info", "load X-ray files (PNG/JPEG/DICOM/NIfTI/NRRD) and print their metadata", _add_info, _info),
    Command("datasets", "check a data folder (study, NIH ChestX-ray14, MIMIC-CXR(-JPG); with --gaze REFLACX/EGD-CXR): a report", _add_datasets, _datasets),
)
