"""Rebuild the shipped first models: ``monailabel_app/model/pretrained_attention.pt`` and
``pretrained_localization.pt``.

The quick start's own 200 sample studies are too few for a KACL model that localises
(140 training images: held-out macro AUC 0.65, T(IoU=0.3) at the centred box's level),
and a longer run on a larger set does not fit the quick start's minutes. So the first
models are trained once by this script, with the server's own training jobs and
defaults (:func:`gazerad.serving.train.run_job`), on a *separate* synthetic set
(``--n 600 --seed 1``: no study of the seed-0 sample set is in it):

1. ``attention``: the FocusContrast attention predictor on that set's gaze (float32: the
   localiser's box settings are tied to these exact weights by their fingerprint).
2. ``localization``: ResNet-10 at 256 px, 12 epochs, temperature fitted on the validation
   split, and per-class box extraction tuned there with the attention model's map as a box
   source beside the CAM layers (the job finds ``attention.pt`` beside it); stored in
   float16 (~10 MB). Each ``--methods`` candidate (KACL with the job's validated
   contrastive weight, and the supervised baseline) is trained alike; the one with the best
   *validation* macro AUC + T(IoU=0.3) (the KACL table's rule) is shipped, and every
   candidate's validation figures go into its statistics (``selection``, on the model card).

Each comes with its statistics (model card: training data, held-out metrics). ``gazerad
serve`` copies them to ``attention.pt`` / ``localization.pt`` when those are missing.

    python scripts/make_weights.py                  # about 30 min on 2 CPU cores
    python scripts/make_weights.py --device cuda
    python scripts/make_weights.py --retune-boxes   # box extraction only, weights untouched (~3 min)

``--retune-boxes`` re-tunes the shipped localiser's box extraction with the current code on
the same set's validation boxes and the shipped attention model
(:func:`gazerad.kacl.trainer.retune_boxes`) and re-measures its held-out figures; its
statistics keep the training record and say when and from what the boxes were re-tuned
(``boxes_retuned``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def validation_score(model_file: Path, studies: Path, device: str) -> dict[str, float]:
    """A trained localiser's validation macro AUC and T(IoU=0.3) (its gaze boxes where tuned so)."""
    from gazerad.kacl.evaluate import evaluate_kacl, selection_score

    m = evaluate_kacl(model_file, studies, splits=("validate",), overlays=0, device=None if device == "auto" else device)
    auc, t = m["auc"]["macro"], m["localization"]["overall"][0.3]
    return {"auc": auc, "t_iou_0.3": t, "score": selection_score(auc, t)}


def _ship(src: Path, dest: Path, stats: dict, a: argparse.Namespace, dtype: str) -> None:
    from gazerad.engine.checkpoint import half_model_file
    from gazerad.io.atomic import atomic_write_json
    from gazerad.serving.train import public_stats, publish

    if dtype == "float16":
        half_model_file(src, dest)
    else:
        publish(src, dest)
    stats["shipped"] = {"script": "scripts/make_weights.py", "n": a.n, "seed": a.seed, "dtype": dtype}
    atomic_write_json(dest.with_suffix(".stats.json"), public_stats(stats))  # no build-machine paths
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB)")


def retune_shipped(out: Path, studies: Path, device: str, work: Path) -> dict:
    """Re-tune ``out``'s shipped localiser's boxes on ``studies`` (weights and training record
    kept) and re-measure it. The re-tuned model is made and measured in ``work``; the shipped
    file is replaced (atomically) only once its held-out figures are in."""
    import time

    from gazerad.engine.checkpoint import rewrite_model_file
    from gazerad.io.atomic import atomic_write_json
    from gazerad.kacl.trainer import retune_boxes
    from gazerad.serving.train import heldout_metrics, public_stats

    loc, att = out / "pretrained_localization.pt", out / "pretrained_attention.pt"
    dev = None if device == "auto" else device
    stats = json.loads(loc.with_suffix(".stats.json").read_text())
    before = {"t_iou_0.3": stats.get("t_iou_0.3"), "per_class": {c: v.get("0.3") for c, v in stats.get("localization", {}).get("per_class", {}).items()}}
    own = torch_load_config(loc).get("attention")
    trial = work / "retuned_localization.pt"
    tuned = retune_boxes(loc, studies, attention=att, out=trial, device=dev)
    if "skipped" in tuned:
        raise SystemExit(f"boxes not re-tuned: {tuned['skipped']}")
    measured = heldout_metrics(trial, studies, dev)
    if measured.get("t_iou_0.3") is None:
        why = measured.get("evaluation") or measured.get("localization_skipped")
        raise SystemExit(f"boxes not re-tuned: no held-out localisation figures ({why}); {loc} unchanged")
    rewrite_model_file(trial, loc, lambda s: s["config"].update(attention=own))  # the training record's attention path, not this machine's
    stats.update(measured)
    stats["boxes_retuned"] = {
        "script": "scripts/make_weights.py --retune-boxes",
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "split": "validate",
        "validation_t_iou_0.3": tuned["t_iou_0.3"],
        "heldout_before": before,
        "note": "weights unchanged; held-out figures re-measured with the re-tuned boxes",
    }
    atomic_write_json(loc.with_suffix(".stats.json"), public_stats(stats))
    was = "unknown" if before["t_iou_0.3"] is None else f"{before['t_iou_0.3']:.3f}"
    print(f"re-tuned {loc}: held-out T(IoU=0.3) {was} -> {stats['t_iou_0.3']:.3f}")
    return stats


def torch_load_config(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["config"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "monailabel_app" / "model"))
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--work", default=None, help="folder for the studies and the run (default: a temporary one)")
    ap.add_argument("--methods", nargs="+", default=["kacl", "supervised"], choices=["kacl", "supervised"], help="localiser candidates")
    ap.add_argument("--retune-boxes", action="store_true", help="only re-tune the shipped localiser's box extraction (weights untouched)")
    a = ap.parse_args(argv)

    from gazerad.serving.launch import datastore_dir
    from gazerad.serving.train import publish, run_job
    from gazerad.synth.study import generate_studies

    work = Path(a.work or tempfile.mkdtemp(prefix="gazerad-weights-"))
    studies = work / "studies"
    if not (studies / "labels.csv").is_file():
        generate_studies(studies, n=a.n, seed=a.seed, size=512, workers=2, progress=True)
    out = Path(a.out)
    if a.retune_boxes:
        retune_shipped(out, studies, a.device, work)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    model = work / "model"
    stats = run_job("attention", datastore_dir(studies), model, {"device": a.device})
    _ship(model / "attention.pt", out / "pretrained_attention.pt", stats, a, "float32")  # the localiser tunes its boxes with it
    runs = {}
    for method in a.methods:
        cand = work / f"model-{method}"
        cand.mkdir(parents=True, exist_ok=True)
        publish(model / "attention.pt", cand / "attention.pt")
        runs[method] = (cand, run_job("localization", datastore_dir(studies), cand, {"device": a.device, "method": method}))
    selection = {m: validation_score(cand / "localization.pt", studies, a.device) for m, (cand, _) in runs.items()}
    best = max(selection, key=lambda m: selection[m]["score"])
    for m, v in selection.items():
        print(f"validation {m}: macro AUC {v['auc']:.3f}, T(IoU=0.3) {v['t_iou_0.3']:.3f}" + ("  <- shipped" if m == best else ""))
    cand, stats = runs[best]
    stats["selection"] = {"chosen": best, "rule": "validation macro AUC + T(IoU=0.3)", "validation": selection}
    _ship(cand / "localization.pt", out / "pretrained_localization.pt", stats, a, "float16")
    return 0


if __name__ == "__main__":
    sys.exit(main())
