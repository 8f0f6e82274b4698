"""KACL: ``gazerad train-kacl`` (classifier + radiomics of its Grad-CAM region, or supervised) and ``evaluate-localization``."""

from __future__ import annotations

import argparse

from gazerad.cli._command import Command
from gazerad.cli._settings import add_settings, settings_from_args

__all__ = ["COMMANDS", "CAM_METHODS"]

from gazerad.kacl.config import CAM_METHODS


def _add_train_kacl(s: argparse.ArgumentParser) -> None:
    from gazerad.kacl.config import KACLConfig

    add_settings(s, KACLConfig, "kacl", aliases={"cam_method": ["--cam"]})


def _train_kacl(args: argparse.Namespace) -> int:
    from gazerad.kacl.trainer import train_kacl

    cfg = settings_from_args(args)
    res = train_kacl(cfg)
    if "model" in res:  # rank 0
        h = res["history"][-1] if res["history"] else {}
        print(f"train-kacl [{cfg.method}]: {res['steps']} steps in {res['seconds']:.1f} s, final loss {h.get('loss', float('nan')):.4f} -> {res['model']}")
    return 0


def _add_evaluate_localization(s: argparse.ArgumentParser) -> None:
    s.add_argument("--model", required=True, help="kacl.pt or its run folder")
    s.add_argument("--data", required=True, help="study folder")
    s.add_argument("--boxes", default=None, help="BBox_List_2017.csv (default: DATA/BBox_List_2017.csv)")
    s.add_argument(
        "--splits", nargs="+", default=["test"], help="labels.csv splits to score (default test: validate tunes the temperature and the CAM threshold)"
    )
    s.add_argument("--out", default=None, help="folder for metrics.json and overlays/")
    s.add_argument("--overlays", type=int, default=8, help="overlay PNGs to write (default 8)")
    s.add_argument("--cam-method", dest="cam_method", default="gradcam", choices=CAM_METHODS, help="default gradcam")
    s.add_argument("--cam", dest="cam_method", choices=CAM_METHODS, help=argparse.SUPPRESS)  # the old name
    s.add_argument(
        "--cam-threshold", dest="cam_threshold", type=float, default=None, help="CAM threshold after blur (default: the model's, tuned on validation)"
    )
    s.add_argument("--threshold", dest="cam_threshold", type=float, help=argparse.SUPPRESS)  # the old name
    s.add_argument(
        "--attention",
        default=None,
        help=(
            "attention.pt the run's box extraction was tuned with (train-kacl --attention; default: that file when it exists, "
            "else attention.pt or pretrained_attention.pt beside the model, as the server serves them, else CAM-only boxes)"
        ),
    )
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present)")


def _evaluate_localization(args: argparse.Namespace) -> int:
    from gazerad.kacl.evaluate import evaluate_kacl

    res = evaluate_kacl(
        args.model,
        args.data,
        splits=args.splits,
        boxes_csv=args.boxes,
        out=args.out,
        overlays=args.overlays,
        cam_method=args.cam_method,
        cam_threshold=args.cam_threshold,
        device=args.device,
        attention=args.attention,
    )
    auc = res["auc"]
    print("ROC AUC  " + "  ".join(f"{k} {v:.3f}" for k, v in auc.items()))
    if "localization" in res:
        loc, base = res["localization"]["overall"], res["baseline_centred"]["overall"]
        print("T(IoU)        " + "  ".join(f"{t:>5}" for t in loc))
        print("accuracy      " + "  ".join(f"{v:5.3f}" for v in loc.values()))
        print("centred box   " + "  ".join(f"{v:5.3f}" for v in base.values()))
        src = res["box_extraction"]
        for c, acc in res["localization"]["per_class"].items():
            layer = (src["per_class"].get(c) or {}).get("cam_layer") or src["cam_layer"]
            print(f"{c[:13]:13s} " + "  ".join(f"{v:5.3f}" for v in acc.values()) + f"   ({res['localization']['n_boxes'][c]} boxes; {layer})")
    elif "localization_skipped" in res:
        print(f"T(IoU): not scored ({res['localization_skipped']})")
    if "boxes_left_out" in res:
        n = res["boxes_left_out"]["per_class"]
        print(f"left out: {sum(n.values())} boxes of classes the model does not predict ({', '.join(f'{c} {k}' for c, k in n.items())})")
    cal = res.get("calibration") or {}
    if "ece" in cal:
        print(f"calibration: T {cal['temperature']:.2f}, ECE {cal['ece']:.3f} (uncalibrated {cal['ece_uncalibrated']:.3f}) on {cal['n_images']} images")
    if args.out:
        print(f"metrics and overlays in {args.out}")
    return 0


COMMANDS = (
    Command("train-kacl", "KACL: classifier + radiomics of its Grad-CAM region as positive view (or --method supervised)", _add_train_kacl, _train_kacl),
    Command(
        "evaluate-localization",
        "per-class ROC AUC and T(IoU) localisation accuracy of a KACL/classifier run",
        _add_evaluate_localization,
        _evaluate_localization,
    ),
)
