"""KACL against the supervised classifier at scarce labels: AUC and T(IoU) localisation, paired by seed.

Protocol (README, *KACL table*):

1. One synthetic study set (``--n`` studies; the generator's 70 / 10 / 20 % train /
   validate / test split). Per label fraction (``--fractions``, default 10 % and 100 % of the
   training images labelled; KACL trains its contrastive term on every training image,
   the supervised classifier sees only the labelled ones) and seed: ``supervised`` and
   ``kacl`` with the same labelled subset and initialisation (``seed``).
2. Each run's temperature (calibration) and CAM threshold / blur (box extraction) are
   chosen on the **validation** split by the trainer; the table scores the **test** split
   only: macro ROC AUC, T(IoU) at 0.1 ... 0.7 overall and per class, mean best IoU.
   KACL's contrastive weight is chosen on the validation split too: the default 0.3 and
   each ``--w-con-sweep`` weight train at the first fraction for every seed; the weight
   with the best mean validation macro AUC + T(IoU=0.3) trains every KACL row of the table.
   KACL's image view is jittered (``--augment``: positioning and exposure); the supervised
   baseline trains with and without that augmentation and keeps, per fraction, the better
   on validation (``--choose-supervised-augment``), so KACL meets it at its best of two.
3. Baselines on the same test boxes: the centred box (half of each side) and the
   *attention box*: boxes of the FocusContrast attention predictor's map (trained on the
   training split's gaze; threshold and blur chosen on validation the same way), labelled
   with each true box's class (it knows where readers look, not which finding is there).
4. Statistics: mean, std (ddof 1) over seeds; for KACL the paired difference to the
   supervised run of the same fraction and seed with a 95 % t interval
   (:func:`gazerad.pretrain.diagnostics.paired_summary`), on AUC and on T(IoU=0.3).

    python benchmarks/kacl_table.py            # the table (about 1 h on 2 cores)
    python benchmarks/kacl_table.py --quick    # minutes: the pipeline's structure (CI)
    python benchmarks/kacl_table.py --device cuda --n 4000 --image-size 256 --epochs 30 --seeds 0 1 2 3 4

Writes ``OUT.json`` (rows with ``labelled``, ``method``, ``auc``, ``t_iou`` per threshold,
``mean_iou``, ``per_class``, stds, per-seed values and ``ci_low`` / ``ci_high`` of the paired
differences), ``OUT.md`` and ``OUT.png`` (default ``benchmarks/results/kacl_table``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("supervised", "kacl")
TS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny settings: checks the pipeline, not the result")
    ap.add_argument("--studies", default=None, help="an existing study folder (default: generate --n studies)")
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--synth-size", type=int, default=512)
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.1, 1.0])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--backbone", default="resnet10")
    ap.add_argument("--cam-layer", default="backbone.layer2")
    ap.add_argument("--attention-epochs", type=int, default=10)
    ap.add_argument(
        "--roi-tuning",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="KACL re-tunes its ROI extraction (CAM layer, threshold, blur per class) on the validation boxes at every refresh (KACLConfig.roi_tuning)",
    )
    ap.add_argument(
        "--gaze",
        action="store_true",
        help="KACL's box sources include the attention predictor's map (KACLConfig.attention): for its ROIs with --roi-tuning and its final boxes",
    )
    ap.add_argument("--w-con", type=float, default=None, help="KACL's reference contrastive weight (default: the trainer's 0.3)")
    ap.add_argument(
        "--w-con-sweep",
        nargs="*",
        type=float,
        default=[0.1],
        help="contrastive weights (BCE weight 1 - w) tried for KACL at the first fraction, scored on the validation split beside the default",
    )
    ap.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="random positioning and exposure jitter of KACL's training images (gazerad.data.augment); the baseline's too with --no-choose-supervised-augment",
    )
    ap.add_argument(
        "--choose-supervised-augment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train the supervised baseline with and without augmentation and keep the better on validation, per fraction",
    )
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(RESULTS / "kacl_table"))
    ap.add_argument("--work", default=None, help="folder for studies and runs (default: a temporary one; runs there are resumed)")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.synth_size, a.fractions, a.seeds, a.epochs, a.image_size, a.batch_size, a.attention_epochs = 40, 128, [0.5, 1.0], a.seeds[:2], 1, 64, 8, 1
        a.w_con_sweep = a.w_con_sweep[-1:]
    if len(a.seeds) < 2:
        ap.error("need >= 2 seeds for a std and a paired interval")
    return a


def _studies(a: argparse.Namespace, work: Path) -> Path:
    from gazerad.synth.study import generate_studies

    studies = Path(a.studies) if a.studies else work / "studies"
    if not a.studies and not (studies / "labels.csv").is_file():
        generate_studies(studies, n=a.n, seed=0, size=a.synth_size, workers=2, progress=not a.quick)
    return studies


def run_one(
    a: argparse.Namespace,
    studies: Path,
    work: Path,
    method: str,
    frac: float,
    seed: int,
    w_con: float | None = None,
    split: str = "test",
    augment: bool | None = None,
) -> dict[str, Any]:
    """Train one run (resumed when its folder holds a checkpoint) and score ``split``.

    ``w_con``: the contrastive weight (the BCE weight is ``1 - w_con``); ``None`` keeps the
    trainer's defaults (0.3 / 0.7). ``augment``: ``None`` follows ``--augment``.
    """
    from gazerad.kacl import evaluate_kacl, train_kacl

    augment = a.augment if augment is None else augment
    kacl = method == "kacl"
    tag = ("" if w_con is None else f"-wcon{w_con:g}") + ("-aug" if augment else "")
    tag += ("-roi" if kacl and a.roi_tuning else "") + ("-gaze" if kacl and a.gaze else "")
    out = work / "runs" / f"{method}-{frac}-s{seed}-{a.image_size}px-{a.epochs}ep{tag}"
    t = time.perf_counter()
    cfg = dict(
        data=str(studies),
        out=str(out),
        method=method,
        backbone=a.backbone,
        image_size=a.image_size,
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        labelled_fraction=frac,
        seed=seed,
        cam_layer=a.cam_layer,
        bin_width=16.0,
        augment=augment,
        roi_tuning=kacl and a.roi_tuning,
        attention=str(attention_model(a, studies, work)) if kacl and a.gaze else None,
        device=a.device,
        progress=False,
    )
    if w_con is not None:
        cfg.update(w_con=w_con, w_cls=1.0 - w_con)
    res = train_kacl(cfg) if not (out / "kacl.pt").is_file() else {"history": json.loads((out / "history.json").read_text())["history"]}
    ev = out / ("eval" if split == "test" else f"eval-{split}")
    m = evaluate_kacl(out, studies, splits=(split,), out=ev, overlays=4 if seed == a.seeds[0] and split == "test" else 0, device=a.device)
    hist = res["history"]
    ep = sum(h["epoch_seconds"] for h in hist) or 1.0
    loc = m["localization"]
    return {
        "method": method,
        "labelled": frac,
        "seed": seed,
        "run": str(out),
        "augment": augment,
        "split": split,
        "w_con": w_con,
        "auc": m["auc"]["macro"],
        "auc_per_class": {k: v for k, v in m["auc"].items() if k != "macro"},
        "t_iou": {str(k): v for k, v in loc["overall"].items()},
        "t_iou_per_class": {c: {str(k): v for k, v in acc.items()} for c, acc in loc["per_class"].items()},
        "mean_iou": loc["mean_best_iou"],
        "n_boxes": loc["n_boxes"],
        "baseline_centred": {"t_iou": {str(k): v for k, v in m["baseline_centred"]["overall"].items()}, "mean_iou": m["baseline_centred"]["mean_best_iou"]},
        "calibration": {k: m["calibration"].get(k) for k in ("temperature", "ece", "ece_uncalibrated")},
        "box_extraction": m["box_extraction"],
        "radiomics_share": sum(h.get("radiomics_seconds", 0.0) for h in hist) / ep,
        "history": [{k: h[k] for k in ("epoch", "loss", "bce", "contrastive") if k in h} for h in hist],
        "seconds": time.perf_counter() - t,
    }


def attention_model(a: argparse.Namespace, studies: Path, work: Path) -> Path:
    """The attention predictor of the training split's gaze (trained once, at most 128 px)."""
    from gazerad.attention import train_attention

    model_file = work / "attention" / "attention.pt"
    if not model_file.is_file():
        size = min(a.image_size, 128)
        train_attention(studies, work / "attention", epochs=a.attention_epochs, batch_size=16, image_size=size, progress=False, device=a.device)
    return model_file


def attention_baseline(a: argparse.Namespace, studies: Path, work: Path) -> dict[str, Any]:
    """Boxes of the attention predictor's map, threshold and blur chosen on validation, scored on test."""
    from gazerad.attention import load_attention_model, predict_attention
    from gazerad.io.xray import read_xray
    from gazerad.kacl.evaluate import best_box_settings, box_requests
    from gazerad.localize import localization_accuracy, map_to_boxes
    from gazerad.pretrain.data import read_study_table

    model = load_attention_model(attention_model(a, studies, work))
    table = read_study_table(studies)
    bpath = studies / "BBox_List_2017.csv"

    def maps_of(split: str) -> tuple[dict[str, dict[int, np.ndarray]], dict[str, list]]:
        rows = table.subset(split)
        truth, requests, _ = box_requests(table, rows, bpath, 1)
        maps = {}
        for k, i in enumerate(rows):
            if requests[k]:
                heat = predict_attention(model, read_xray(table.paths[i])[0].astype(np.float32))
                maps[table.ids[i]] = {c: heat for c in requests[k]}
        return maps, truth

    vmaps, vtruth = maps_of("validate")
    chosen = best_box_settings(vmaps, vtruth, table.classes)
    tmaps, ttruth = maps_of("test")
    pred = {i: [b for c, m in by.items() for b in map_to_boxes(m, chosen["cam_threshold"], chosen["blur"], label=table.classes[c])] for i, by in tmaps.items()}
    acc = localization_accuracy(pred, ttruth, TS)
    return {
        "t_iou": {str(k): v for k, v in acc["overall"].items()},
        "t_iou_per_class": {c: {str(k): v for k, v in x.items()} for c, x in acc["per_class"].items()},
        "mean_iou": acc["mean_best_iou"],
        "threshold": chosen["cam_threshold"],
        "blur": chosen["blur"],
    }


def diagnose(run: Path, studies: Path, device: str | None = None) -> dict[str, Any]:
    """Why KACL does or does not help, on one KACL run's training images (the images its
    feedback loop saw):

    - ``roi``: the training-time ROI (the run's last ROI settings: tuned per class with
      ``roi_tuning``, else its CAM layer, threshold and blur; the class the trainer picks)
      against the true box of that class: mean IoU and share with IoU >= 0.3,
      per class, on the images that have such a box;
    - ``radiomics_auc``: per class, the 5-fold cross-validated ROC AUC of a logistic
      regression on the standardised radiomics of those ROIs, beside the same on the whole
      image: how much the positive view knows about each finding;
    - ``loss``: the last epoch's classification and contrastive terms and the contrastive
      weight.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from gazerad.data.inputs import encoder_inputs
    from gazerad.data.nih import read_bbox_list
    from gazerad.io.xray import read_xray
    from gazerad.kacl.trainer import labelled_mask, load_kacl, refresh_radiomics
    from gazerad.localize import iou
    from gazerad.pretrain.data import read_study_table
    from gazerad.radiomics import FeatureStandardizer, RadiomicsExtractor

    dev = device or "cpu"
    model, state = load_kacl(run / "kacl.pt", dev)
    cfg = state["config"]
    table = read_study_table(studies)
    rows = table.subset(tuple(cfg["splits"]))
    size = int(cfg["image_size"])
    images = encoder_inputs([table.paths[i] for i in rows], size)
    labels = torch.from_numpy(table.labels[rows]).float()
    labelled = labelled_mask(len(rows), cfg["labelled_fraction"], cfg["seed"])
    extractor = RadiomicsExtractor("torch", bin_width=cfg["bin_width"])
    feats, _, chosen = refresh_radiomics(
        model,
        images,
        extractor,
        labels,
        labelled,
        cam_method=cfg["cam_method"],
        threshold=cfg["cam_threshold"],
        blur=cfg["blur"],
        device=dev,
        box_settings=state.get("roi_settings"),
        class_names=table.classes,
    )
    boxes_of = read_bbox_list(studies / "BBox_List_2017.csv")
    hits: dict[str, list[float]] = {}
    for i, box in zip(rows, chosen):
        truth = [bx for lab, bx in boxes_of.get(table.ids[i], []) if lab == box.label]
        if truth:
            h, w = read_xray(table.paths[i])[0].shape
            hits.setdefault(box.label, []).append(max(iou(box.scaled(w / size, h / size), t) for t in truth))
    roi = {c: {"mean_iou": float(np.mean(v)), "share_iou_0.3": float(np.mean(np.array(v) >= 0.3)), "n": len(v)} for c, v in sorted(hits.items())}

    def cv_auc(features: torch.Tensor) -> dict[str, float]:
        z = FeatureStandardizer().fit(features.double().numpy()).transform(features.double().numpy())
        out = {}
        for k, c in enumerate(table.classes):
            y = table.labels[rows][:, k].astype(int)
            if y.sum() < 5 or (1 - y).sum() < 5:
                continue
            p = cross_val_predict(LogisticRegression(C=0.1, max_iter=2000), z, y, cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba")[
                :, 1
            ]
            out[c] = float(roc_auc_score(y, p))
        return out

    whole, _, _ = refresh_radiomics(model, images, extractor, whole_image=True, device=dev)
    hist = json.loads((run / "history.json").read_text())["history"][-1]
    return {
        "roi": roi,
        "radiomics_auc": {"cam_roi": cv_auc(feats), "whole_image": cv_auc(whole)},
        "loss": {"bce": hist.get("bce"), "contrastive": hist.get("contrastive"), "w_cls": cfg["w_cls"], "w_con": cfg["w_con"]},
        "n_images": len(rows),
    }


def weight_sweep(a: argparse.Namespace, studies: Path, work: Path) -> tuple[list[dict[str, Any]], float | None]:
    """KACL's contrastive weight: each of ``--w-con-sweep`` and the reference (``--w-con``,
    default the trainer's 0.3) at the first fraction, every seed, scored on the **validation**
    split; each weight paired by seed to the reference on AUC and T(IoU=0.3). Returns the
    rows and the chosen weight (best mean validation macro AUC + T(IoU=0.3); ``None``: the
    trainer's default; without a sweep, the reference)."""
    from gazerad.kacl.config import KACLConfig

    if not a.w_con_sweep or "kacl" not in a.methods:
        return [], a.w_con
    frac, default = a.fractions[0], KACLConfig.__dataclass_fields__["w_con"].default
    ref = default if a.w_con is None else a.w_con
    weights = list(dict.fromkeys([ref, *a.w_con_sweep]))
    runs = {w: [run_one(a, studies, work, "kacl", frac, s, None if w == default else w, split="validate") for s in a.seeds] for w in weights}
    rows = validation_choice(runs, ref, lambda w: {"labelled": frac, "w_con": w, "w_cls": 1.0 - w})
    best = next(r["w_con"] for r in rows if r["chosen"])
    return rows, None if best == default else best


def validation_choice(runs: dict[Any, list[dict[str, Any]]], ref: Any, describe) -> list[dict[str, Any]]:  # noqa: ANN001
    """One row per candidate setting of validation-split ``runs`` (key -> one run per seed):
    ``describe(key)`` fields, mean / std of AUC and T(IoU=0.3), the paired difference to the
    ``ref`` setting with its 95 % CI, the last contrastive loss, and ``chosen``: the best mean
    AUC + T(IoU=0.3) (the first candidate on a tie)."""
    from gazerad.kacl.evaluate import selection_score
    from gazerad.pretrain.diagnostics import paired_summary

    rows = []
    for key, rs in runs.items():
        other = None if key == ref else runs[ref]
        row: dict[str, Any] = {**describe(key), "split": "validate"}
        for name, get in (("auc", lambda r: r["auc"]), ("t_iou_0.3", lambda r: r["t_iou"]["0.3"])):
            ps = paired_summary({r["seed"]: get(r) for r in rs}, {r["seed"]: get(r) for r in other} if other else None)
            row.update({name: ps["mean"], f"{name}_std": ps["std"], f"diff_{name}": ps["diff_vs_plain"]})
            row.update({f"ci_low_{name}": ps["ci_low"], f"ci_high_{name}": ps["ci_high"]})
        row["contrastive"] = float(np.mean([r["history"][-1].get("contrastive", np.nan) for r in rs]))
        rows.append(row)
    best = max(range(len(rows)), key=lambda i: (selection_score(rows[i]["auc"], rows[i]["t_iou_0.3"]), -i))
    for i, r in enumerate(rows):
        r["chosen"] = i == best
    return rows


def supervised_augment(a: argparse.Namespace, studies: Path, work: Path) -> tuple[list[dict[str, Any]], dict[float, bool]]:
    """The baseline's augmentation, chosen per fraction on the **validation** split: the
    supervised classifier trains with and without ``--augment``'s jitter for every seed and
    keeps the better (mean AUC + T(IoU=0.3)), so KACL meets the baseline at its best of two.
    Returns the rows and ``{fraction: augment}``."""
    if "supervised" not in a.methods or not a.choose_supervised_augment:
        return [], {f: a.augment for f in a.fractions}
    rows, chosen = [], {}
    for frac in a.fractions:
        runs = {aug: [run_one(a, studies, work, "supervised", frac, s, split="validate", augment=aug) for s in a.seeds] for aug in (a.augment, not a.augment)}
        got = validation_choice(runs, a.augment, lambda aug, frac=frac: {"labelled": frac, "augment": aug})
        chosen[frac] = next(r["augment"] for r in got if r["chosen"])
        rows += got
    return rows, chosen


def summarise(runs: list[dict[str, Any]], a: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (labelled, method): means, stds, per-seed values; KACL rows paired to supervised."""
    from gazerad.pretrain.diagnostics import paired_summary

    def by_seed(rs: list[dict], get) -> dict[int, float]:  # noqa: ANN001
        return {r["seed"]: float(get(r)) for r in rs}

    rows = []
    for frac in a.fractions:
        sup = [r for r in runs if r["labelled"] == frac and r["method"] == "supervised"]
        for method in a.methods:
            rs = [r for r in runs if r["labelled"] == frac and r["method"] == method]
            if not rs:
                continue
            paired = method != "supervised" and bool(sup)
            auc = paired_summary(by_seed(rs, lambda r: r["auc"]), by_seed(sup, lambda r: r["auc"]) if paired else None)
            t03 = paired_summary(by_seed(rs, lambda r: r["t_iou"]["0.3"]), by_seed(sup, lambda r: r["t_iou"]["0.3"]) if paired else None)
            t_iou = {str(t): paired_summary(by_seed(rs, lambda r, t=t: r["t_iou"][str(t)])) for t in TS}
            classes = sorted(rs[0]["t_iou_per_class"])
            rows.append(
                {
                    "labelled": frac,
                    "method": method,
                    "seeds": auc["seeds"],
                    "auc": auc["mean"],
                    "auc_std": auc["std"],
                    "t_iou": {t: s["mean"] for t, s in t_iou.items()},
                    "t_iou_std": {t: s["std"] for t, s in t_iou.items()},
                    "mean_iou": float(np.mean([r["mean_iou"] for r in rs])),
                    "mean_iou_std": float(np.std([r["mean_iou"] for r in rs], ddof=1)),
                    "per_class": {
                        c: {
                            "auc": float(np.mean([r["auc_per_class"].get(c, np.nan) for r in rs])),
                            "t_iou_0.3": float(np.mean([r["t_iou_per_class"][c]["0.3"] for r in rs])),
                            "n_boxes": rs[0]["n_boxes"].get(c),
                        }
                        for c in classes
                    },
                    "diff_auc": auc["diff_vs_plain"],
                    "ci_low": auc["ci_low"],
                    "ci_high": auc["ci_high"],
                    "diff_t_iou_0.3": t03["diff_vs_plain"],
                    "ci_low_t_iou_0.3": t03["ci_low"],
                    "ci_high_t_iou_0.3": t03["ci_high"],
                    "values": {str(r["seed"]): {"auc": r["auc"], "t_iou_0.3": r["t_iou"]["0.3"], "mean_iou": r["mean_iou"]} for r in rs},
                    "ece": float(np.mean([r["calibration"]["ece"] for r in rs if r["calibration"].get("ece") is not None] or [np.nan])),
                    "radiomics_share": float(np.mean([r["radiomics_share"] for r in rs])),
                }
            )
    return rows


def write(
    rows: list[dict],
    runs: list[dict],
    base: dict[str, Any],
    att: dict[str, Any],
    a: argparse.Namespace,
    n_test: int,
    diag: dict[str, Any] | None = None,
    sweep: list[dict[str, Any]] | None = None,
    sup_aug: list[dict[str, Any]] | None = None,
) -> None:
    from matplotlib.figure import Figure

    from gazerad.io.atomic import atomic_write_text
    from gazerad.kacl.config import KACLConfig

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(a).items() if k not in ("out", "work")}
    w_con = next((r["w_con"] for r in sweep or [] if r["chosen"]), KACLConfig.__dataclass_fields__["w_con"].default if a.w_con is None else a.w_con)
    payload = {
        "rows": rows,
        "baselines": {"centred_box": base, "attention_box": att},
        "settings": settings,
        "runs": runs,
        "n_test_images": n_test,
        "diagnostics": diag or {},
        "w_con_sweep": sweep or [],
        "w_con_chosen": w_con,
        "supervised_augment": sup_aug or [],
    }
    atomic_write_text(out.with_suffix(".json"), json.dumps(payload, indent=1, default=float))

    def pm(m: float, s: float) -> str:
        return f"{m:.3f} ± {s:.3f}"

    def ci(d: float | None, lo: float | None, hi: float | None) -> str:
        return "-" if d is None or lo is None else f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"

    show = ("0.1", "0.3", "0.5", "0.7")
    lines = [
        f"# KACL vs supervised ({len(a.seeds)} seeds {a.seeds}; {a.epochs} epochs, {a.backbone} at {a.image_size} px, "
        f"CAM on {a.cam_layer}; KACL {'with' if a.augment else 'without'} augmentation"
        f"{', ROI tuned on validation' if a.roi_tuning else ''}; {n_test} test images)",
        "",
        "Test split only (validation chose each run's temperature and CAM threshold, and KACL's contrastive weight "
        f"w_con = {w_con:g}). T(IoU): share of true boxes whose best same-class box reaches the IoU.",
        "Paired columns: KACL minus supervised at the same labels and seed, mean [95 % CI].",
        "",
        "| labelled | method | macro AUC | " + " | ".join(f"T(IoU)={t}" for t in show) + " | mean best IoU | ECE | AUC diff | T(0.3) diff |",
        "|---" * (8 + len(show) - 2) + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['labelled']:.0%} | {r['method']} | {pm(r['auc'], r['auc_std'])} | "
            + " | ".join(pm(r["t_iou"][t], r["t_iou_std"][t]) for t in show)
            + f" | {pm(r['mean_iou'], r['mean_iou_std'])} | {r['ece']:.3f} | {ci(r['diff_auc'], r['ci_low'], r['ci_high'])} | "
            + f"{ci(r['diff_t_iou_0.3'], r['ci_low_t_iou_0.3'], r['ci_high_t_iou_0.3'])} |"
        )
    lines += ["| - | centred box | - | " + " | ".join(f"{base['t_iou'][t]:.3f}" for t in show) + f" | {base['mean_iou']:.3f} | - | - | - |"]
    lines += [
        f"| - | attention box (threshold {att['threshold']}, blur {att['blur']}) | - | "
        + " | ".join(f"{att['t_iou'][t]:.3f}" for t in show)
        + f" | {att['mean_iou']:.3f} | - | - | - |"
    ]
    classes = sorted(rows[0]["per_class"]) if rows else []
    heads = " | ".join(f"{c} (n={rows[0]['per_class'][c]['n_boxes']})" for c in classes)
    lines += ["", "## Per class: T(IoU=0.3) (AUC)", "", f"| labelled | method | {heads} |"]
    lines += ["|---" * (len(classes) + 2) + "|"]
    for r in rows:
        cells = " | ".join(f"{r['per_class'][c]['t_iou_0.3']:.2f} ({r['per_class'][c]['auc']:.2f})" for c in classes)
        lines.append(f"| {r['labelled']:.0%} | {r['method']} | {cells} |")
    lines.append("| - | attention box | " + " | ".join(f"{att['t_iou_per_class'].get(c, {}).get('0.3', float('nan')):.2f}" for c in classes) + " |")
    for frac, d in (diag or {}).items():
        lines += ["", f"## Why (KACL, {frac} labelled, seed {a.seeds[0]}: its {d['n_images']} training images)", ""]
        lines += [
            "| class | ROI mean IoU with the true box | ROI IoU >= 0.3 | images | radiomics AUC, CAM ROI | radiomics AUC, whole image |",
            "|---|---|---|---|---|---|",
        ]
        for c in sorted(set(d["roi"]) | set(d["radiomics_auc"]["cam_roi"])):
            r = d["roi"].get(c, {})
            roi = f"{r['mean_iou']:.2f} | {r['share_iou_0.3']:.2f} | {r['n']}" if r else "- | - | 0"
            lines.append(
                f"| {c} | {roi} | {d['radiomics_auc']['cam_roi'].get(c, float('nan')):.2f} | {d['radiomics_auc']['whole_image'].get(c, float('nan')):.2f} |"
            )
        lo = d["loss"]
        lines.append(f"\nLast epoch: BCE {lo['bce']:.3f}, contrastive {lo['contrastive']:.3f} (weights {lo['w_cls']} / {lo['w_con']}).")
    if sup_aug:
        lines += ["", f"## Supervised baseline: augmentation (validation split, {len(a.seeds)} seeds)", ""]
        lines += ["| labelled | augmentation | macro AUC | T(IoU)=0.3 | AUC diff | T(0.3) diff |", "|---|---|---|---|---|---|"]
        for r in sup_aug:
            lines.append(
                f"| {r['labelled']:.0%} | {'on' if r['augment'] else 'off'}{' (chosen)' if r['chosen'] else ''} | {pm(r['auc'], r['auc_std'])} | "
                f"{pm(r['t_iou_0.3'], r['t_iou_0.3_std'])} | {ci(r['diff_auc'], r['ci_low_auc'], r['ci_high_auc'])} | "
                f"{ci(r['diff_t_iou_0.3'], r['ci_low_t_iou_0.3'], r['ci_high_t_iou_0.3'])} |"
            )
    if sweep:
        lines += ["", f"## Contrastive weight (KACL, {sweep[0]['labelled']:.0%} labelled, validation split, {len(a.seeds)} seeds)", ""]
        lines += ["| w_con / w_cls | macro AUC | T(IoU)=0.3 | AUC diff vs reference | T(0.3) diff vs reference | last contrastive loss |"]
        lines += ["|---|---|---|---|---|---|"]
        for r in sweep:
            lines.append(
                f"| {r['w_con']:g} / {r['w_cls']:g}{' (chosen)' if r['chosen'] else ''} | {pm(r['auc'], r['auc_std'])} | "
                f"{pm(r['t_iou_0.3'], r['t_iou_0.3_std'])} | "
                f"{ci(r['diff_auc'], r['ci_low_auc'], r['ci_high_auc'])} | "
                f"{ci(r['diff_t_iou_0.3'], r['ci_low_t_iou_0.3'], r['ci_high_t_iou_0.3'])} | {r['contrastive']:.3f} |"
            )
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")

    fig = Figure(figsize=(10, 3.6))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    x = np.arange(len(rows))
    names = [f"{r['method']}\n{r['labelled']:.0%}" for r in rows]
    ax1.bar(x, [r["auc"] for r in rows], yerr=[r["auc_std"] for r in rows], color=["#999" if r["method"] == "supervised" else "#d62" for r in rows], capsize=3)
    ax1.set_xticks(x, names, fontsize=7)
    ax1.set_ylim(0.4, 1.0)
    ax1.set_title("macro ROC AUC (test)", fontsize=9)
    ts = [float(t) for t in TS]
    for r in rows:
        ax2.errorbar(ts, [r["t_iou"][str(t)] for t in TS], yerr=[r["t_iou_std"][str(t)] for t in TS], label=f"{r['method']} {r['labelled']:.0%}", capsize=2)
    ax2.plot(ts, [base["t_iou"][str(t)] for t in TS], "k--", label="centred box")
    ax2.plot(ts, [att["t_iou"][str(t)] for t in TS], "g:", label="attention box")
    ax2.set_xlabel("IoU threshold T", fontsize=8)
    ax2.set_title("localisation accuracy T(IoU) (test boxes)", fontsize=9)
    ax2.legend(fontsize=6)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


def main(argv: list[str] | None = None) -> int:
    from gazerad.pretrain.data import read_study_table

    a = parse_args(argv)
    work = Path(a.work or tempfile.mkdtemp(prefix="gazerad-kacl-"))
    work.mkdir(parents=True, exist_ok=True)
    studies = _studies(a, work)
    t0 = time.perf_counter()
    sweep, w_con = weight_sweep(a, studies, work)  # validation: KACL's weight and the baseline's
    sup_aug, sup_augment = supervised_augment(a, studies, work)  # augmentation before any test score
    print(f"chosen on validation: KACL w_con {w_con or 'default'}; supervised augmentation {sup_augment}", flush=True)
    runs = []
    total = len(a.fractions) * len(a.methods) * len(a.seeds)
    for seed in a.seeds:
        for frac in a.fractions:
            for method in a.methods:
                kacl = method == "kacl"
                r = run_one(a, studies, work, method, frac, seed, w_con if kacl else None, augment=None if kacl else sup_augment[frac])
                runs.append(r)
                print(
                    f"[{len(runs)}/{total}] {method:10s} {frac:4.0%} seed {seed}: AUC {r['auc']:.3f}  T(0.1/0.3/0.5) "
                    + "/".join(f"{r['t_iou'][t]:.2f}" for t in ("0.1", "0.3", "0.5"))
                    + f"  IoU {r['mean_iou']:.3f}  ({r['seconds']:.0f} s; elapsed {time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    att = attention_baseline(a, studies, work)
    base = runs[0]["baseline_centred"]
    rows = summarise(runs, a)
    diag = {}
    if "kacl" in a.methods:
        for frac in a.fractions:
            run = Path(next(r["run"] for r in runs if r["method"] == "kacl" and r["labelled"] == frac and r["seed"] == a.seeds[0]))
            cached = run / "diagnostics.json"
            if not cached.is_file():
                cached.write_text(json.dumps(diagnose(run, studies, a.device)))
            diag[f"{frac:.0%}"] = json.loads(cached.read_text())
    write(rows, runs, base, att, a, len(read_study_table(studies).subset("test")), diag, sweep, sup_aug)
    print(Path(a.out).with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
