"""Which box should a clinician see first? The served localiser's boxes ranked by their
finding's calibrated probability against ranked by *expected hit*: probability x the class's
validation T(IoU=0.3) (``validation_t_iou_0.3`` on every box), the chance that the finding is
there *and* its box finds it (a per-class localisation quality times the classification
score, as IoU-aware detectors rank their boxes).

Protocol:

1. The served localiser (default: the shipped ``pretrained_localization.pt`` beside its
   ``pretrained_attention.pt``) answers every image of ``--split`` of each ``--data`` study
   set through :class:`gazerad.serving.infer.LocalizationService` with ``min_score 0``: one
   box set per class, as ``top_k`` = all classes would.
2. On every image with at least one true box, each rule's first box: ``top1_hit`` (IoU >= 0.3
   with a true box of its label) and ``top1_overlap`` (IoU > 0 with any true box).
3. Paired over images (the same boxes, only the order differs): expected hit minus
   probability with a 95 % Student-t interval
   (:func:`gazerad.pretrain.diagnostics.paired_summary`). The served default is chosen on a
   validation split; test splits report it.

    python benchmarks/box_ranking.py --data studies/sample:validate studies/sample:test

Writes ``OUT.json`` (one row per study set, split and rule), ``OUT.md`` and ``OUT.png``
(default ``benchmarks/results/box_ranking``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
MODEL = ROOT / "monailabel_app" / "model" / "pretrained_localization.pt"


RULES = ("probability", "expected_hit")  # gazerad.serving.params.BOX_RANKS, the reference first


def first_boxes(svc: Any, data: Path, split: str, progress: bool = True) -> list[dict[str, Any]]:
    """Per image of ``split`` with a true box: its true boxes and, per rule, the served boxes of every class in the server's order."""
    from gazerad.data.nih import read_bbox_list
    from gazerad.pretrain.data import read_study_table

    table = read_study_table(data)
    truth = read_bbox_list(data / "BBox_List_2017.csv")
    rows = [k for k, s in enumerate(table.splits) if s == split and table.ids[k] in truth]
    out = []
    t0 = time.perf_counter()
    for n, k in enumerate(rows):
        served = {rule: svc(table.paths[k], min_score=0.0, rank=rule)["boxes"] for rule in RULES}  # the server's own order
        out.append({"id": table.ids[k], "truth": truth[table.ids[k]], "boxes": served})
        if progress and (n + 1) % 10 == 0:
            print(f"  {data.name}:{split} {n + 1}/{len(rows)} images ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def top_box_scores(images: list[dict[str, Any]], rule: str) -> dict[str, dict[str, float]]:
    """``{"top1_hit": {image: 0/1}, "top1_overlap": {image: 0/1}, "top1_label": {image: label}}`` of ``rule``'s first box."""
    from gazerad.localize.boxes import iou

    hit, overlap, label = {}, {}, {}
    for im in images:
        if not im["boxes"][rule]:
            hit[im["id"]] = overlap[im["id"]] = 0.0
            label[im["id"]] = None
            continue
        b = im["boxes"][rule][0]  # the top box, as the server orders them
        mine = (b["x"], b["y"], b["w"], b["h"])
        hit[im["id"]] = float(any(lab == b["label"] and iou(mine, t) >= 0.3 for lab, t in im["truth"]))
        overlap[im["id"]] = float(any(iou(mine, t) > 0 for _, t in im["truth"]))
        label[im["id"]] = b["label"]
    return {"top1_hit": hit, "top1_overlap": overlap, "top1_label": label}


def rows_of(name: str, split: str, images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from gazerad.pretrain.diagnostics import paired_summary

    scores = {r: top_box_scores(images, r) for r in RULES}
    rows = []
    for r in RULES:
        row: dict[str, Any] = {"data": name, "split": split, "rule": r, "n_images": len(images)}
        for m in ("top1_hit", "top1_overlap"):
            ps = paired_summary(scores[r][m], None if r == "probability" else scores["probability"][m])
            row.update({m: ps["mean"], f"diff_{m}": ps["diff_vs_plain"], f"ci_low_{m}": ps["ci_low"], f"ci_high_{m}": ps["ci_high"]})
        labels = [v for v in scores[r]["top1_label"].values() if v]
        row["top1_labels"] = {c: labels.count(c) for c in sorted(set(labels))}
        rows.append(row)
    return rows


def write(rows: list[dict[str, Any]], out: Path, meta: dict[str, Any]) -> None:
    from gazerad.engine.runlog import new_figure, save_figure
    from gazerad.io.atomic import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps({**meta, "rows": rows}, indent=1))

    def f(v: Any) -> str:
        return "" if v is None else f"{v:+.3f}"

    lines = [
        f"# Box ranking: the first box a clinician sees ({meta['model']})",
        "",
        "First box of every class boxed (min_score 0), on images with a true box. Hit: IoU >= 0.3 with a true box of its label; "
        "overlap: IoU > 0 with any true box. Differences paired over images, 95 % t intervals.",
        "",
        "| data | split | images | rule | top-1 hit | diff [95 % CI] | top-1 overlap | diff [95 % CI] | first-box labels |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = [f"{f(r[f'diff_{m}'])} [{f(r[f'ci_low_{m}'])}, {f(r[f'ci_high_{m}'])}]" if r[f"diff_{m}"] is not None else "" for m in ("top1_hit", "top1_overlap")]
        labs = ", ".join(f"{c} {n}" for c, n in r["top1_labels"].items())
        head = f"| {r['data']} | {r['split']} | {r['n_images']} | {r['rule']}"
        lines.append(f"{head} | {r['top1_hit']:.3f} | {d[0]} | {r['top1_overlap']:.3f} | {d[1]} | {labs} |")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")

    fig = new_figure((7, 3.2))
    ax = fig.add_subplot()
    groups = sorted({(r["data"], r["split"]) for r in rows}, key=lambda g: [(r["data"], r["split"]) for r in rows].index(g))
    width = 0.38
    for j, rule in enumerate(RULES):
        vals = [next(r["top1_hit"] for r in rows if (r["data"], r["split"]) == g and r["rule"] == rule) for g in groups]
        ax.bar(np.arange(len(groups)) + (j - 0.5) * width, vals, width, label=rule)
    ax.set_xticks(np.arange(len(groups)), [f"{d}\n{s}" for d, s in groups], fontsize=7)
    ax.set_ylabel("first box hits a true box (IoU >= 0.3)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("Which box first: probability vs probability x validation hit rate", fontsize=8)
    fig.tight_layout()
    save_figure(fig, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')}, .md, .png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", required=True, help="study folders with their split, FOLDER:SPLIT (e.g. studies/sample:validate)")
    ap.add_argument("--model", default=str(MODEL))
    ap.add_argument("--attention", default=None, help="attention model (default: the one beside the model, pretrained_attention.pt for the shipped one)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(RESULTS / "box_ranking"))
    a = ap.parse_args(argv)

    from gazerad.serving.infer import LocalizationService

    model = Path(a.model)
    att = a.attention or next((str(p) for p in (model.with_name("attention.pt"), model.with_name("pretrained_attention.pt")) if p.is_file()), None)
    svc = LocalizationService(model, a.device, attention_path=att)
    rows = []
    for spec in a.data:
        folder, _, split = spec.rpartition(":")
        if not folder:
            ap.error(f"--data {spec!r}: give FOLDER:SPLIT")
        images = first_boxes(svc, Path(folder), split)
        rows += rows_of(Path(folder).name, split, images)
        for r in rows[-len(RULES) :]:
            got = f"top-1 hit {r['top1_hit']:.3f}, overlap {r['top1_overlap']:.3f} ({r['n_images']} images)"
            print(f"{r['data']}:{r['split']} {r['rule']:>12}: {got}", flush=True)
    write(rows, Path(a.out), {"model": model.name, "attention": Path(att).name if att else None, "rules": list(RULES)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
