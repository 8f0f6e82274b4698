"""What a new attention model does to the served localiser's boxes (README, *What the first
models do*): the server's own jobs on a study set used as the datastore.

1. The shipped pair (``pretrained_attention.pt`` + ``pretrained_localization.pt``, the latter's
   gaze box settings tuned beside the former) is copied into a fresh model folder.
2. ``POST /train/attention``'s job (:func:`gazerad.serving.train.run_job`) trains a new
   attention model on the set's gaze and, since the localiser's boxes use the attention map,
   re-tunes them on the set's validation boxes (:func:`gazerad.serving.train.retune_served_localiser`).
3. The test split is scored by ``evaluate-localization``'s function for three localisers:
   ``shipped`` (the shipped pair), ``fallback`` (the shipped localiser beside the new
   attention model: its CAM-only settings, what the server served before the re-tune) and
   ``retuned`` (the re-tuned localiser beside the new attention model).

    python benchmarks/attention_retune.py --data studies/sample

Writes ``OUT.json`` and ``OUT.md`` (default ``benchmarks/results/attention_retune``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "monailabel_app" / "model"
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="study folder (images/, labels.csv with a validate split, BBox_List_2017.csv, gaze)")
    ap.add_argument("--epochs", type=int, default=None, help="attention epochs (default: the server's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(RESULTS / "attention_retune"))
    a = ap.parse_args(argv)

    from gazerad.io.atomic import atomic_write_text
    from gazerad.kacl.evaluate import evaluate_kacl
    from gazerad.serving.train import run_job

    data = Path(a.data)
    md = Path(tempfile.mkdtemp(prefix="gazerad-retune-"))
    for name in ("attention", "localization"):
        shutil.copyfile(MODELS / f"pretrained_{name}.pt", md / f"{name}.pt")
    shipped = md / "shipped_localization.pt"
    shutil.copyfile(md / "localization.pt", shipped)
    t0 = time.perf_counter()
    job = run_job("attention", data / "images", md, {"device": a.device, **({"epochs": a.epochs} if a.epochs else {})})
    seconds = time.perf_counter() - t0
    print(f"attention job {seconds:.0f} s: {json.dumps(job['localization_boxes'])[:300]}", flush=True)

    def score(model: Path, attention: Path) -> dict:
        m = evaluate_kacl(model, data, splits=("test",), overlays=0, attention=attention, device=a.device)
        loc = m["localization"]
        per = {c: v[0.3] for c, v in loc["per_class"].items()}
        return {"auc": m["auc"]["macro"], "t_iou_0.3": loc["overall"][0.3], "per_class": per, "box_attention": m["box_extraction"]["attention"]}

    rows = {
        "shipped": score(shipped, MODELS / "pretrained_attention.pt"),
        "fallback": score(shipped, md / "attention.pt"),
        "retuned": score(md / "localization.pt", md / "attention.pt"),
    }
    for k, r in rows.items():
        print(f"{k:>9}: test T(IoU=0.3) {r['t_iou_0.3']:.3f}  " + "  ".join(f"{c} {v:.2f}" for c, v in r["per_class"].items()), flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"data": data.name, "attention_job_seconds": round(seconds, 1), "attention_heldout_cc": job.get("best_metric")}
    meta["localization_boxes"] = job["localization_boxes"]
    atomic_write_text(out.with_suffix(".json"), json.dumps({**meta, "rows": rows}, indent=1, default=float))
    classes = list(rows["shipped"]["per_class"])
    lines = [
        f"# A new attention model and the served localiser ({data.name}, test split)",
        "",
        f"Attention job: {seconds:.0f} s, held-out CC {job.get('best_metric', float('nan')):.3f}; "
        f"the localiser's boxes re-tuned on validation: {job['localization_boxes'].get('retuned')}.",
        "",
        "| localiser | attention beside it | T(IoU=0.3) | " + " | ".join(classes) + " |",
        "|---|---|---|" + "---|" * len(classes),
    ]
    where = {"shipped": "shipped (tuned with it)", "fallback": "new (CAM-only fall-back)", "retuned": "new (re-tuned with it)"}
    for k, r in rows.items():
        lines.append(f"| {k} | {where[k]} | {r['t_iou_0.3']:.3f} | " + " | ".join(f"{r['per_class'][c]:.2f}" for c in classes) + " |")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')}, .md")
    shutil.rmtree(md, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
