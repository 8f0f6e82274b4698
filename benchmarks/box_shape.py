"""Box shape: a component's extent against a box of the class's typical size centred on the
component's peak, for the same localiser and the same maps.

A nodule is 9-16 px on a 512 px film; the attention map (where readers looked) and the
CAMs put a blob several times that size on it, so no threshold makes the blob's extent a
nodule-sized box (the served localiser's held-out Nodule T(IoU=0.3) was 0.00). A peak box
has the class's median validation box size (:func:`gazerad.kacl.evaluate.box_sizes`) and
sits where the map is highest inside each component (:func:`gazerad.localize.map_to_boxes`
``size``): one box per component either way, so the comparison adds no boxes.

Protocol:

1. The served localiser (default: the shipped ``pretrained_localization.pt`` and
   ``pretrained_attention.pt``, trained on ``scripts/make_weights.py``'s set) is re-tuned
   twice on the validation boxes of ``--tune`` (that set: 600 studies, seed 1): with
   component extents only (what it shipped with) and with extents and peak boxes per class
   (:func:`gazerad.kacl.evaluate.tune_box_extraction` ``shapes``). The weights are the same.
2. Each ``--data`` ``FOLDER:SPLIT`` (held-out splits: the tuning set's test split and the
   quick-start sample's test split, a set the localiser never saw) is boxed with both
   settings; for every true box the best IoU of a same-class box.
3. T(IoU=0.3) per class and overall; peak minus extent paired over true boxes (hit 0/1),
   mean and 95 % Student-t interval; mean best IoU; boxes per (image, class).

    python benchmarks/box_shape.py --tune /path/to/make_weights-set --data /path/to/make_weights-set:test studies/sample:test

Writes ``OUT.json``, ``OUT.md`` and ``OUT.png`` (default ``benchmarks/results/box_shape``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
MODEL = ROOT / "monailabel_app" / "model" / "pretrained_localization.pt"
ATTENTION = ROOT / "monailabel_app" / "model" / "pretrained_attention.pt"
VARIANTS = ("extent", "peak")  # tuned with ("extent",) and with gazerad.kacl.evaluate.BOX_SHAPES


def shown(path: str | Path) -> str:
    """``path`` relative to the repository where it is inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(MODEL))
    ap.add_argument("--attention", default=str(ATTENTION))
    ap.add_argument("--tune", required=True, help="study folder whose validation split tunes both settings")
    ap.add_argument("--data", nargs="+", required=True, help="FOLDER:SPLIT held-out sets to score")
    ap.add_argument("--out", default=str(RESULTS / "box_shape"))
    return ap.parse_args(argv)


def tune(model: Any, att: Any, state: dict[str, Any], data: Path) -> dict[str, dict[str, Any]]:
    """Both box settings of ``model`` tuned on ``data``'s validation boxes."""
    from gazerad.kacl.evaluate import BOX_SHAPES, model_study_table, tune_box_extraction

    table = model_study_table(state, data)
    rows = table.subset(("validate",))
    size = int(state["config"]["image_size"])
    out = {}
    for name, shapes in zip(VARIANTS, (("extent",), BOX_SHAPES)):
        t = time.perf_counter()
        tuned = tune_box_extraction(model, table, rows, data / "BBox_List_2017.csv", size, attention_model=att, shapes=shapes)
        tuned.pop("grid")
        tuned.pop("cam_only", None)
        out[name] = tuned
        print(
            f"tuned {name} on {data}:validate in {time.perf_counter() - t:.0f} s: "
            + ", ".join(f"{c} {v['t_iou_0.3']:.2f}" for c, v in tuned["per_class"].items()),
            flush=True,
        )
    return out


def best_ious(model: Any, att: Any, state: dict[str, Any], settings: dict[str, Any], data: Path, split: str) -> dict[str, Any]:
    """Per true box of ``split`` (boxed images): its label and best same-class IoU; boxes per (image, class)."""
    from gazerad.data.inputs import encoder_inputs
    from gazerad.kacl.evaluate import box_requests, localize_images, model_study_table, predicted_attention
    from gazerad.localize import iou

    table = model_study_table(state, data)
    rows = table.subset((split,))
    size = int(state["config"]["image_size"])
    truth, requests, scales = box_requests(table, rows, data / "BBox_List_2017.csv", size)
    keep = [k for k, r in enumerate(requests) if r]
    images = encoder_inputs([table.paths[rows[k]] for k in keep], size)
    heat = predicted_attention(att, images)
    req = [requests[k] for k in keep]
    boxes, _ = localize_images(
        model,
        images,
        req,
        table.classes,
        threshold=settings["cam_threshold"],
        blur=settings["blur"],
        cam_layer=settings["cam_layer"],
        per_class=settings["per_class"],
        attention=heat,
    )
    labels, best = [], []
    counts = []
    for j, k in enumerate(keep):
        pred = [b.scaled(*scales[k]) for b in boxes[j]]
        counts += [sum(b.label == table.classes[c] for b in pred) for c in req[j]]
        for lab, box in truth[table.ids[rows[k]]]:
            labels.append(lab)
            best.append(max([iou(p, box) for p in pred if p.label == lab] or [0.0]))
    return {"labels": labels, "best_iou": best, "boxes_per_class": float(np.mean(counts)), "images": len(keep)}


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, float | None]:
    """Mean of ``b - a`` (paired) with its 95 % Student-t interval."""
    from scipy import stats

    d = b.astype(np.float64) - a.astype(np.float64)
    if len(d) < 2:
        return {"diff": float(d.mean()) if len(d) else None, "ci_low": None, "ci_high": None}
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return {"diff": float(d.mean()), "ci_low": float(d.mean() - half), "ci_high": float(d.mean() + half)}


def summarise(scored: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """T(IoU=0.3), mean best IoU and the paired difference, overall and per class, of both variants on one set."""
    labels = np.array(scored["extent"]["labels"])
    ious = {v: np.array(scored[v]["best_iou"]) for v in VARIANTS}
    groups = {"all": np.ones(len(labels), bool), **{c: labels == c for c in sorted(set(labels))}}
    out = {}
    for g, sel in groups.items():
        hit = {v: (ious[v][sel] >= 0.3).astype(float) for v in VARIANTS}
        out[g] = {
            "n_boxes": int(sel.sum()),
            **{f"t_iou_0.3_{v}": float(hit[v].mean()) for v in VARIANTS},
            **{f"mean_iou_{v}": float(ious[v][sel].mean()) for v in VARIANTS},
            **paired(hit["extent"], hit["peak"]),
        }
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(5.2 * len(rows), 3.6), squeeze=False)
    for ax, row in zip(axes[0], rows):
        groups = list(row["per_class"])
        x = np.arange(len(groups))
        for k, v in enumerate(VARIANTS):
            ax.bar(
                x + (k - 0.5) * 0.38,
                [row["per_class"][g][f"t_iou_0.3_{v}"] for g in groups],
                0.38,
                label={"extent": "component extent", "peak": "per class: extent or peak box"}[v],
            )
        ax.set_xticks(x, [f"{g}\n({row['per_class'][g]['n_boxes']})" for g in groups], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{row['set']}:{row['split']}", fontsize=9)
        ax.set_ylabel("T(IoU=0.3)")
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.suptitle("Same localiser, boxes tuned on validation: component extent vs peak box of the class's size", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Box shape: component extent vs a peak box of the class's validation size",
        "",
        f"Localiser `{result['model']}` with `{result['attention']}`; both settings tuned on `{result['tune']}:validate`; held-out splits below.",
        "Paired over true boxes (hit at IoU >= 0.3): peak-allowed minus extent-only, mean [95 % t interval].",
        "",
        "| set | class | boxes | T(0.3) extent | T(0.3) with peak boxes | difference | mean best IoU extent | with peak boxes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        for g, v in r["per_class"].items():
            ci = "-" if v["ci_low"] is None else f"{v['diff']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"
            t = f"{v['t_iou_0.3_extent']:.3f} | {v['t_iou_0.3_peak']:.3f}"
            lines.append(f"| {r['set']}:{r['split']} | {g} | {v['n_boxes']} | {t} | {ci} | {v['mean_iou_extent']:.3f} | {v['mean_iou_peak']:.3f} |")
    lines += [
        "",
        "Boxes per (image, class) asked: "
        + "; ".join(
            f"{r['set']}:{r['split']} extent {r['boxes_per_class']['extent']:.2f}, with peak {r['boxes_per_class']['peak']:.2f}" for r in result["rows"]
        ),
    ]
    lines += ["", "## Chosen per class (validation)", "", "| class | extent-only setting | with peak boxes |", "|---|---|---|"]
    for c in result["settings"]["peak"]["per_class"]:
        cell = []
        for v in VARIANTS:
            s = result["settings"][v]["per_class"][c]
            size = f", box {s['box_size'][0]:.3f} x {s['box_size'][1]:.3f} of the image" if "box_size" in s else ""
            cell.append(f"{s['cam_layer']} t {s['cam_threshold']} blur {s['blur']}{size} (val {s['t_iou_0.3']:.2f} of {s['n_boxes']})")
        lines.append(f"| {c} | {cell[0]} | {cell[1]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from gazerad.attention.checkpoint import load_attention_model
    from gazerad.kacl.trainer import load_kacl

    a = parse_args(argv)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model, state = load_kacl(a.model, "cpu")
    att = load_attention_model(a.attention, "cpu")
    settings = tune(model, att, state, Path(a.tune))
    rows = []
    for spec in a.data:
        folder, _, split = spec.rpartition(":")
        scored = {v: best_ious(model, att, state, settings[v], Path(folder), split) for v in VARIANTS}
        row = {"set": Path(folder).name, "path": shown(folder), "split": split, "images": scored["extent"]["images"], "per_class": summarise(scored)}
        row["boxes_per_class"] = {v: scored[v]["boxes_per_class"] for v in VARIANTS}
        rows.append(row)
        al = row["per_class"]["all"]
        print(
            f"{spec}: T(0.3) extent {al['t_iou_0.3_extent']:.3f} -> with peak {al['t_iou_0.3_peak']:.3f}"
            f" ({al['diff']:+.3f} [{al['ci_low']:+.3f}, {al['ci_high']:+.3f}])",
            flush=True,
        )
    result = {
        "model": shown(a.model),
        "attention": shown(a.attention),
        "tune": shown(a.tune),
        "settings": settings,
        "rows": rows,
        "seconds": time.perf_counter() - t0,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result))
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out}.json/.md/.png in {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
