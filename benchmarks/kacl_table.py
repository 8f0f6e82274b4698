"""KACL vs a supervised classifier on the synthetic studies: AUC and T(IoU) localisation.

For labelled fractions (default 10 % and 100 %), methods ``supervised`` (BCE only) and
``kacl`` (BCE + NT-Xent against radiomics of the Grad-CAM ROI, feedback loop every
epoch), and seeds (default 0 1 2): train with ``gazerad.kacl.train_kacl`` and score the
held-out split (test + validate) with ``evaluate_kacl``: macro ROC AUC, localisation
accuracy at T(IoU) 0.1 ... 0.7 and the mean best IoU, beside the centred-box baseline.
Also reports the radiomics share of KACL's epoch time. Writes ``OUT.md``, ``OUT.json`` and
``OUT.png`` (default ``benchmarks/results/kacl_table``).

Usage: python benchmarks/kacl_table.py [--n 240] [--epochs 10] [--size 128] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from gazerad.kacl import evaluate_kacl, train_kacl
from gazerad.synth import generate_studies

RESULTS = Path(__file__).resolve().parent / "results"
TS = (0.1, 0.3, 0.5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", default=None)
    ap.add_argument("--n", type=int, default=240)
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.1, 1.0])
    ap.add_argument("--methods", nargs="+", default=["supervised", "kacl"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--backbone", default="resnet10")
    ap.add_argument("--cam-layer", default="backbone.layer3")
    ap.add_argument("--out", default=str(RESULTS / "kacl_table"))
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gazerad-kacl-"))
    studies = Path(a.studies) if a.studies else work / "studies"
    if not a.studies:
        generate_studies(studies, n=a.n, seed=0, workers=2, progress=True)
    runs = []
    for frac in a.fractions:
        for method in a.methods:
            for seed in a.seeds:
                out = work / f"{method}-{frac}-{seed}"
                t = time.perf_counter()
                res = train_kacl(
                    dict(
                        data=str(studies),
                        out=str(out),
                        method=method,
                        backbone=a.backbone,
                        image_size=a.size,
                        epochs=a.epochs,
                        batch_size=a.batch,
                        lr=a.lr,
                        labelled_fraction=frac,
                        seed=seed,
                        cam_layer=a.cam_layer,
                        progress=False,
                    )
                )
                m = evaluate_kacl(out, studies, out=out / "eval", overlays=4 if seed == a.seeds[0] else 0)
                hist = res["history"]
                rad = sum(h["radiomics_seconds"] for h in hist)
                cam = sum(h["cam_seconds"] for h in hist)
                ep = sum(h["epoch_seconds"] for h in hist)
                run = {
                    "method": method,
                    "fraction": frac,
                    "seed": seed,
                    "auc": m["auc"]["macro"],
                    "loc": m["localization"]["overall"],
                    "iou": m["localization"]["mean_best_iou"],
                    "base_loc": m["baseline_centred"]["overall"],
                    "base_iou": m["baseline_centred"]["mean_best_iou"],
                    "radiomics_share": rad / ep,
                    "cam_share": cam / ep,
                    "seconds": time.perf_counter() - t,
                    "per_class_auc": m["auc"],
                }
                runs.append(run)
                print(
                    f"{method:10s} frac {frac:4.2f} seed {seed}: AUC {run['auc']:.3f}  T(0.1/0.3/0.5) "
                    + "/".join(f"{run['loc'][t]:.2f}" for t in TS)
                    + f"  IoU {run['iou']:.3f}  radiomics {run['radiomics_share']:.1%}"
                    f" of epoch time  ({run['seconds']:.0f} s)",
                    flush=True,
                )

    def agg(rs, key, sub=None):
        v = np.array([r[key][sub] if sub is not None else r[key] for r in rs], dtype=np.float64)
        return float(v.mean()), float(v.std())

    lines = [
        f"# KACL vs supervised on the synthetic studies ({len(a.seeds)} seeds, {a.epochs} epochs, {a.backbone} at {a.size} px, CAM on {a.cam_layer})",
        "",
        "Held-out split (test + validate); localisation accuracy = share of ground-truth boxes whose best same-class predicted box reaches the IoU.",
        "",
        "| labelled | method | macro AUC | T(IoU)=0.1 | T(IoU)=0.3 | T(IoU)=0.5 | mean best IoU | radiomics share of epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for frac in a.fractions:
        for method in a.methods:
            rs = [r for r in runs if r["fraction"] == frac and r["method"] == method]
            row = {
                "fraction": frac,
                "method": method,
                "auc": agg(rs, "auc"),
                "iou": agg(rs, "iou"),
                **{f"t{t}": agg(rs, "loc", t) for t in TS},
                "radiomics_share": agg(rs, "radiomics_share"),
            }
            summary.append(row)
            share = f"{row['radiomics_share'][0]:.1%}" if method == "kacl" else "-"
            lines.append(
                f"| {frac:.0%} | {method} | {row['auc'][0]:.3f} +- {row['auc'][1]:.3f} | "
                + " | ".join(f"{row[f't{t}'][0]:.3f} +- {row[f't{t}'][1]:.3f}" for t in TS)
                + f" | {row['iou'][0]:.3f} +- {row['iou'][1]:.3f} | {share} |"
            )
    base = runs[0]
    lines += [
        "",
        "Centred-box baseline (half of each side): T(IoU) " + " / ".join(f"{base['base_loc'][t]:.3f}" for t in TS) + f", mean best IoU {base['base_iou']:.3f}.",
    ]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"args": vars(a), "runs": runs, "summary": summary}, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=120)
    labels = [f"{r['method']}\n{r['fraction']:.0%}" for r in summary]
    x = np.arange(len(summary))
    axes[0].bar(x, [r["auc"][0] for r in summary], yerr=[r["auc"][1] for r in summary], color=["#999", "#d62"] * len(a.fractions), capsize=3)
    axes[0].set_ylim(0.4, 1.0)
    axes[0].set_title("macro ROC AUC", fontsize=9)
    for k, t in enumerate(TS):
        axes[1].bar(x + (k - 1) * 0.25, [r[f"t{t}"][0] for r in summary], 0.25, yerr=[r[f"t{t}"][1] for r in summary], label=f"T(IoU)={t}", capsize=2)
    axes[1].set_title("localisation accuracy (held-out boxes)", fontsize=9)
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"))
    print("\n".join(lines))
    print(f"wrote {out}.md/.json/.png")


if __name__ == "__main__":
    main()
