"""Gaze as a box source: CAM-only boxes against boxes whose source (CAM layer, the attention
map, or a CAM gated by it) is chosen per class on validation, for the same trained models.

Protocol (README, *Gaze boxes*):

1. The KACL table's study set and runs (``--work``, the folder ``kacl_table.py --work``
   used: ``studies/``, ``runs/``, ``attention/attention.pt``; what is missing is made as
   the table makes it: 600 studies of seed 0, the attention predictor); missing runs are trained
   with the table's own :func:`kacl_table.run_one` (no augmentation: the setting chosen on
   validation for the supervised baseline; KACL with ``--w-con`` and ``--roi-tuning``).
2. Per run, two box extractions of the *same weights*, both tuned on the validation
   boxes only: ``cam`` (the trainer's own: CAM layer, threshold, blur per class) and
   ``gaze`` (:func:`gazerad.kacl.retune_boxes` with the attention predictor: its map alone
   and each layer's CAM times the map join the layers as sources). Test split scores.
3. Paired differences over seeds with 95 % t intervals
   (:func:`gazerad.pretrain.diagnostics.paired_summary`): gaze minus cam for every model,
   and KACL minus supervised at the same labels with gaze boxes.

    python benchmarks/gaze_boxes.py --work /path/to/kacl-table-work

Writes ``OUT.json`` (rows with ``labelled``, ``method``, ``boxes``, ``auc``, ``t_iou`` per
threshold, ``mean_iou``, ``per_class``, per-seed values, ``ci_low`` / ``ci_high``), ``OUT.md``
and ``OUT.png`` (default ``benchmarks/results/gaze_boxes``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kacl_table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TS = kacl_table.TS
MAIN = ("Cardiomegaly", "Effusion", "Mass", "Pneumothorax")  # the classes with a T(0.3) >= 0.5 goal; Nodule is reported apart


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="the kacl_table work folder (studies/, runs/, attention/)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument(
        "--models",
        nargs="+",
        default=["supervised:0.1", "kacl:0.1", "supervised:1.0"],
        help="method:labelled fraction, or kacl:fraction:gaze (KACL trained with gaze box sources for its ROIs)",
    )
    ap.add_argument("--w-con", type=float, default=0.1, help="KACL's contrastive weight (chosen on validation by the table)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(RESULTS / "gaze_boxes"))
    a = ap.parse_args(argv)
    if len(a.seeds) < 2:
        ap.error("need >= 2 seeds for a std and a paired interval")
    return a


def score(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures of one :func:`gazerad.kacl.evaluate_kacl` answer this script reports."""
    loc = metrics["localization"]
    return {
        "auc": metrics["auc"]["macro"],
        "t_iou": {str(k): v for k, v in loc["overall"].items()},
        "t_iou_per_class": {c: v[0.3] for c, v in loc["per_class"].items()},
        "mean_iou": loc["mean_best_iou"],
        "n_boxes": loc["n_boxes"],
        "sources": sources(metrics["box_extraction"]),
    }


def sources(box_extraction: dict[str, Any]) -> dict[str, str]:
    return {c: (v.get("cam_layer") or box_extraction["cam_layer"]) for c, v in box_extraction["per_class"].items()}


def run_model(a: argparse.Namespace, ta: argparse.Namespace, studies: Path, work: Path, spec: str, seed: int) -> dict[str, Any]:
    """Train (or find) one run (``spec``: ``method:fraction``, ``kacl:fraction:gaze`` for KACL
    trained with gaze sources); score its CAM-only and gaze box extraction on test."""
    from gazerad.kacl import evaluate_kacl, retune_boxes

    method, frac, *opt = spec.split(":")
    frac, kacl, trained_gaze = float(frac), method == "kacl", opt == ["gaze"]
    ta = argparse.Namespace(**{**vars(ta), "gaze": trained_gaze})
    r = kacl_table.run_one(ta, studies, work, method, frac, seed, a.w_con if kacl else None, augment=False)
    run = Path(r["run"])
    att = work / "attention" / "attention.pt"
    keys = ("auc", "t_iou", "mean_iou", "n_boxes")
    # the table's own test scores of the run: its trainer's box extraction (CAM-only unless trained with gaze)
    own = {**{k: r[k] for k in keys}, "t_iou_per_class": {c: v["0.3"] for c, v in r["t_iou_per_class"].items()}, "sources": sources(r["box_extraction"])}
    t = time.perf_counter()
    if trained_gaze:  # the same tuning's CAM-only choice is the reference
        cam, gz = score(evaluate_kacl(run, studies, splits=("test",), out=run / "eval-cam", overlays=0, device=a.device, use_attention=False)), own
    else:
        gaze = run / "gaze"
        if not (gaze / "kacl.pt").is_file():
            gaze.mkdir(exist_ok=True)
            retune_boxes(run, studies, att, out=gaze / "kacl.pt", device=a.device)
        overlays = 4 if seed == a.seeds[0] else 0
        cam, gz = own, score(evaluate_kacl(gaze, studies, splits=("test",), out=gaze / "eval", overlays=overlays, device=a.device, attention=att))
    name = method + ("-gaze" if trained_gaze else "")
    return {"method": name, "labelled": frac, "seed": seed, "run": str(run), "cam": cam, "gaze": gz, "tuning_seconds": time.perf_counter() - t}


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, boxes); gaze rows paired to the same model's cam row, KACL gaze rows also to supervised gaze."""
    from gazerad.pretrain.diagnostics import paired_summary

    def by_seed(rs: list[dict], boxes: str, get) -> dict[int, float]:  # noqa: ANN001
        return {r["seed"]: float(get(r[boxes])) for r in rs}

    rows = []
    for method, frac in dict.fromkeys((r["method"], r["labelled"]) for r in results):
        rs = [r for r in results if r["method"] == method and r["labelled"] == frac]
        sup = [r for r in results if r["method"] == "supervised" and r["labelled"] == frac]
        for boxes in ("cam", "gaze"):
            base = "cam" if boxes == "gaze" else None
            t03 = paired_summary(by_seed(rs, boxes, lambda s: s["t_iou"]["0.3"]), by_seed(rs, base, lambda s: s["t_iou"]["0.3"]) if base else None)
            row = {
                "labelled": frac,
                "method": method,
                "boxes": boxes,
                "seeds": t03["seeds"],
                "auc": float(np.mean([r[boxes]["auc"] for r in rs])),
                "auc_std": float(np.std([r[boxes]["auc"] for r in rs], ddof=1)),
                "t_iou": {str(t): float(np.mean([r[boxes]["t_iou"][str(t)] for r in rs])) for t in TS},
                "t_iou_std": {str(t): float(np.std([r[boxes]["t_iou"][str(t)] for r in rs], ddof=1)) for t in TS},
                "mean_iou": float(np.mean([r[boxes]["mean_iou"] for r in rs])),
                "per_class": {
                    c: {"t_iou_0.3": float(np.mean([r[boxes]["t_iou_per_class"][c] for r in rs])), "n_boxes": rs[0][boxes]["n_boxes"][c]}
                    for c in rs[0][boxes]["t_iou_per_class"]
                },
                "per_seed": {r["seed"]: {"auc": r[boxes]["auc"], "t_iou_0.3": r[boxes]["t_iou"]["0.3"], "sources": r[boxes]["sources"]} for r in rs},
                "diff_t03_vs_cam": t03["diff_vs_plain"],
                "ci_low": t03["ci_low"],
                "ci_high": t03["ci_high"],
            }
            if boxes == "gaze" and method != "supervised" and sup:
                auc = paired_summary(by_seed(rs, "gaze", lambda s: s["auc"]), by_seed(sup, "gaze", lambda s: s["auc"]))
                t = paired_summary(by_seed(rs, "gaze", lambda s: s["t_iou"]["0.3"]), by_seed(sup, "gaze", lambda s: s["t_iou"]["0.3"]))
                row["vs_supervised"] = {
                    "auc_diff": auc["diff_vs_plain"],
                    "auc_ci": [auc["ci_low"], auc["ci_high"]],
                    "t03_diff": t["diff_vs_plain"],
                    "t03_ci": [t["ci_low"], t["ci_high"]],
                }
            rows.append(row)
    return rows


def _ci(d: float | None, lo: float | None, hi: float | None) -> str:
    return "-" if d is None else f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def write(rows: list[dict[str, Any]], results: list[dict[str, Any]], att: dict[str, Any], a: argparse.Namespace) -> None:
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    classes = list(rows[0]["per_class"])
    doc = {"protocol": __doc__.split("\n\n")[1], "seeds": a.seeds, "w_con": a.w_con, "rows": rows, "runs": results, "attention_box": att}
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=float))
    n = sum(rows[0]["per_class"][c]["n_boxes"] for c in classes)
    lines = [
        f"# Gaze boxes: CAM-only vs gaze-chosen box sources, same weights ({len(a.seeds)} seeds {a.seeds}; {n} test boxes)",
        "",
        "Both box extractions tuned on the validation split only; test scores. `gaze`: per class the best of the CAM layers, "
        "the attention map, and each CAM times the attention map. Paired column: gaze minus cam, same model and seed, mean [95 % CI].",
        "",
        "| labelled | method | boxes | macro AUC | T(IoU)=0.1 | T(IoU)=0.3 | T(IoU)=0.5 | T(IoU)=0.7 | mean best IoU | T(0.3) gaze - cam |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ts = " | ".join(f"{r['t_iou'][str(t)]:.3f} ± {r['t_iou_std'][str(t)]:.3f}" for t in (0.1, 0.3, 0.5, 0.7))
        lines.append(
            f"| {r['labelled']:.0%} | {r['method']} | {r['boxes']} | {r['auc']:.3f} ± {r['auc_std']:.3f} | {ts} | {r['mean_iou']:.3f} | "
            f"{_ci(r['diff_t03_vs_cam'], r['ci_low'], r['ci_high'])} |"
        )
    att_ts = " | ".join(f"{att['t_iou'][str(t)]:.3f}" for t in (0.1, 0.3, 0.5, 0.7))
    lines.append(f"| - | attention box (threshold {att['threshold']}, blur {att['blur']}) | - | - | {att_ts} | {att['mean_iou']:.3f} | - |")
    head = " | ".join(f"{c} (n={rows[0]['per_class'][c]['n_boxes']})" for c in classes)
    rule = "|---|---|---|" + "---|" * len(classes)
    lines += ["", "## Per class: T(IoU=0.3) (Nodule apart: no goal; small)", "", f"| labelled | method | boxes | {head} |", rule]
    for r in rows:
        lines.append(f"| {r['labelled']:.0%} | {r['method']} | {r['boxes']} | " + " | ".join(f"{r['per_class'][c]['t_iou_0.3']:.2f}" for c in classes) + " |")
    lines.append("| - | attention box | - | " + " | ".join(f"{att['t_iou_per_class'].get(c, {}).get('0.3', float('nan')):.2f}" for c in classes) + " |")
    lines += ["", "## KACL minus supervised, both with gaze boxes (paired by seed)", "", "| labelled | method | AUC diff | T(0.3) diff |", "|---|---|---|---|"]
    for r in rows:
        v = r.get("vs_supervised")
        if v:
            lines.append(f"| {r['labelled']:.0%} | {r['method']} | {_ci(v['auc_diff'], *v['auc_ci'])} | {_ci(v['t03_diff'], *v['t03_ci'])} |")
    lines += ["", "## Sources chosen on validation (gaze boxes), per seed", "", "| labelled | method | seed | " + " | ".join(classes) + " |", rule]
    for r in rows:
        if r["boxes"] == "gaze":
            for seed, v in r["per_seed"].items():
                src = " | ".join(str(v["sources"].get(c, "-")).replace("backbone.", "") for c in classes)
                lines.append(f"| {r['labelled']:.0%} | {r['method']} | {seed} | {src} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(rows, att, classes, out)


def plot(rows: list[dict[str, Any]], att: dict[str, Any], classes: list[str], out: Path) -> None:
    from gazerad.engine.runlog import new_figure, save_figure

    fig = new_figure((11, 4), dpi=110)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    width = 0.8 / (len(rows) + 1)
    x = np.arange(len(classes))
    for k, r in enumerate(rows):
        name = f"{r['method']} {r['labelled']:.0%} {r['boxes']}"
        ax1.bar(x + k * width, [r["per_class"][c]["t_iou_0.3"] for c in classes], width, label=name, hatch="//" if r["boxes"] == "gaze" else None)
        ts = [float(t) for t in r["t_iou"]]
        ax2.errorbar(ts, list(r["t_iou"].values()), yerr=list(r["t_iou_std"].values()), ls="-" if r["boxes"] == "gaze" else "--", capsize=2, label=name)
    ax1.bar(x + len(rows) * width, [att["t_iou_per_class"].get(c, {}).get("0.3", 0.0) for c in classes], width, label="attention box", color="0.6")
    ax1.axhline(0.5, color="k", lw=0.8, ls=":")
    ax1.set_xticks(x + 0.4 - width / 2, classes, fontsize=7)
    ax1.set_title("T(IoU=0.3) per class (test); goal 0.5 dotted", fontsize=9)
    ax1.legend(fontsize=5)
    ax2.plot([float(t) for t in att["t_iou"]], list(att["t_iou"].values()), "k:", label="attention box")
    ax2.set_xlabel("IoU threshold T", fontsize=8)
    ax2.set_title("T(IoU) on test, mean ± std over seeds", fontsize=9)
    ax2.legend(fontsize=5)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out.with_suffix(".png"))


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    work = Path(a.work)
    ta = kacl_table.parse_args(["--work", str(work), "--no-augment", "--roi-tuning", "--device", a.device, "--seeds", *map(str, a.seeds)])
    studies = kacl_table._studies(ta, work)  # the table's study set and attention model: reused, else made as the table makes them
    kacl_table.attention_model(ta, studies, work)
    results = []
    t0 = time.perf_counter()
    for seed in a.seeds:
        for spec in a.models:
            r = run_model(a, ta, studies, work, spec, seed)
            results.append(r)
            print(
                f"{r['method']:10s} {r['labelled']:4.0%} seed {seed}: T(0.3) cam {r['cam']['t_iou']['0.3']:.3f} gaze {r['gaze']['t_iou']['0.3']:.3f}"
                f"  AUC {r['cam']['auc']:.3f}  (elapsed {time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    att = kacl_table.attention_baseline(ta, studies, work)
    write(summarise(results), results, att, a)
    print(Path(a.out).with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
