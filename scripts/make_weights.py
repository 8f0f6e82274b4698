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
2. ``localization``: KACL, ResNet-10 at 256 px, 12 epochs, temperature fitted on the
   validation split, and per-class box extraction tuned there with the attention model's map
   as a box source beside the CAM layers (the job finds ``attention.pt`` beside it); stored
   in float16 (~10 MB).

Each comes with its statistics (model card: training data, held-out metrics). ``gazerad
serve`` copies them to ``attention.pt`` / ``localization.pt`` when those are missing.

    python scripts/make_weights.py                  # about 20 min on 2 CPU cores
    python scripts/make_weights.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "monailabel_app" / "model"))
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--work", default=None, help="folder for the studies and the run (default: a temporary one)")
    a = ap.parse_args(argv)

    from gazerad.engine.checkpoint import half_model_file
    from gazerad.io.atomic import atomic_write_text
    from gazerad.serving.launch import datastore_dir
    from gazerad.serving.train import publish, run_job
    from gazerad.synth.study import generate_studies

    work = Path(a.work or tempfile.mkdtemp(prefix="gazerad-weights-"))
    studies = work / "studies"
    if not (studies / "labels.csv").is_file():
        generate_studies(studies, n=a.n, seed=a.seed, size=512, workers=2, progress=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, dtype in (("attention", "float32"), ("localization", "float16")):  # attention first: the localiser tunes its boxes with it
        stats = run_job(name, datastore_dir(studies), work / "model", {"device": a.device})
        dest = out / f"pretrained_{name}.pt"
        if dtype == "float16":
            half_model_file(work / "model" / f"{name}.pt", dest)
        else:
            publish(work / "model" / f"{name}.pt", dest)
        stats["shipped"] = {"script": "scripts/make_weights.py", "n": a.n, "seed": a.seed, "dtype": dtype}
        atomic_write_text(dest.with_suffix(".stats.json"), json.dumps(stats, indent=1))
        print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
