"""Benchmark table: each framework plain vs +FocusContrast vs +McGIP vs +GzPT on the synthetic
studies, several seeds, linear-probe accuracy and macro AUC (mean +- std).

Steps (all with the project's own commands' Python API):
1. a synthetic study set (``--n`` images, ``gazerad synth``), unless ``--studies`` is given;
2. the gaze relation over the images (``--scheme``, TIMA with eps 0.1 by default);
3. an attention predictor trained on the training split's gaze (``train_attention``);
4. for every framework x method x seed: ``pretrain`` then a linear probe on the held-out split;
5. ``benchmarks/results/pretrain_table.md``, ``.json`` and ``.png`` (bar chart).

Usage: python benchmarks/pretrain_table.py [--n 240] [--epochs 25] [--seeds 0 1 2] [--frameworks simclr moco byol simsiam]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from gazerad.attention import train_attention
from gazerad.data.inputs import encoder_inputs
from gazerad.gaze import load_gaze
from gazerad.gaze.relation import compute_relation
from gazerad.pretrain import PretrainConfig, evaluate_encoder, pretrain, read_study_table
from gazerad.synth import generate_studies

METHODS = ("plain", "focuscontrast", "mcgip", "gzpt")
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", default=None)
    ap.add_argument("--n", type=int, default=240)
    ap.add_argument("--frameworks", nargs="+", default=["simclr", "moco", "byol", "simsiam"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--backbone", default="resnet10")
    ap.add_argument("--scheme", default="tima")
    ap.add_argument("--scheme-eps", type=float, default=0.1)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--drop-p", type=float, default=0.5)
    ap.add_argument("--q", type=float, default=0.6)
    ap.add_argument("--out", default=str(RESULTS / "pretrain_table"))
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gazerad-table-"))
    studies = Path(a.studies) if a.studies else work / "studies"
    if not a.studies:
        generate_studies(studies, n=a.n, seed=0, workers=2, progress=True)
    table = read_study_table(studies)
    t0 = time.perf_counter()
    params = {"eps": a.scheme_eps} if a.scheme == "tima" else {}
    rel = compute_relation(load_gaze(studies), a.scheme, image_ids=table.ids, progress=False, **params)
    rel.save(work / "relation.npz")
    train = table.subset("train")
    same = [bool(set(np.flatnonzero(table.labels[i])) & set(np.flatnonzero(table.labels[j]))) for i in train for j in train if i < j]
    m = rel.dense()[np.ix_(train, train)][np.triu_indices(len(train), 1)]
    share_pos = float(np.mean(np.array(same)[m > a.threshold])) if (m > a.threshold).any() else float("nan")
    print(
        f"relation {a.scheme}: {time.perf_counter() - t0:.1f} s; pairs above {a.threshold}: {(m > a.threshold).mean():.3f} "
        f"of train pairs, of which {share_pos:.2f} share a finding (base rate {np.mean(same):.2f})"
    )
    att = train_attention(studies, work / "attention", epochs=8, batch_size=16, input_size=a.size, progress=False)
    print("attention predictor held-out:", {k: v for k, v in att.items() if isinstance(v, (int, float))})
    images = encoder_inputs(table.paths, a.size)

    rows = []
    for fw in a.frameworks:
        for method in a.methods:
            for seed in a.seeds:
                extra: dict = {}
                if method == "focuscontrast":
                    extra = {"attention": str(work / "attention" / "attention.pt"), "q": a.q}
                elif method in ("mcgip", "gzpt"):
                    extra = {"relation": str(work / "relation.npz"), "threshold": a.threshold, "drop_p": a.drop_p if method == "gzpt" else 0.0}
                out = work / f"{fw}-{method}-{seed}"
                t = time.perf_counter()
                res = pretrain(
                    PretrainConfig(
                        data=str(studies),
                        out=str(out),
                        framework=fw,
                        backbone=a.backbone,
                        image_size=a.size,
                        base_size=2 * a.size,
                        epochs=a.epochs,
                        batch_size=a.batch,
                        proj_dim=64,
                        hidden_dim=256,
                        queue_size=256,
                        lr=2e-3,
                        seed=seed,
                        progress=False,
                        **extra,
                    )
                )
                ev = evaluate_encoder(out / "encoder.pt", studies, protocol="linear", images=images)
                rows.append(
                    {
                        "framework": fw,
                        "method": method,
                        "seed": seed,
                        "accuracy": ev["accuracy"],
                        "auc": ev["auc"],
                        "final_loss": res["history"][-1]["loss"],
                        "seconds": time.perf_counter() - t,
                    }
                )
                print(f"{fw:8s} {method:14s} seed {seed}: acc {ev['accuracy']:.3f} auc {ev['auc']:.3f} ({rows[-1]['seconds']:.0f} s)", flush=True)
    floor = [evaluate_encoder(None, studies, backbone=a.backbone, image_size=a.size, seed=s, images=images) for s in a.seeds]
    write(rows, floor, a, share_pos)


def write(rows: list[dict], floor: list[dict], a: argparse.Namespace, share_pos: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fws = list(dict.fromkeys(r["framework"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    stats = {}
    for fw in fws:
        for me in methods:
            sel = [r for r in rows if r["framework"] == fw and r["method"] == me]
            acc, auc = np.array([r["accuracy"] for r in sel]), np.array([r["auc"] for r in sel])
            stats[fw, me] = (acc.mean(), acc.std(), auc.mean(), auc.std())
    fa = np.array([f["auc"] for f in floor])
    facc = np.array([f["accuracy"] for f in floor])
    lines = [
        f"# Linear probe on the synthetic studies ({len(a.seeds)} seeds, {a.epochs} epochs, {a.backbone}, {a.size} px)",
        "",
        f"Relation: {a.scheme} (eps {a.scheme_eps}), threshold {a.threshold}; GzPT drop p {a.drop_p}; "
        f"FocusContrast q {a.q}. Of the training pairs above the threshold, {share_pos:.2f} share a finding class.",
        f"Random-init backbone (floor): accuracy {facc.mean():.3f} +- {facc.std():.3f}, AUC {fa.mean():.3f} +- {fa.std():.3f}.",
        "",
        "| framework | method | accuracy | macro AUC | AUC gain vs plain (in plain std) |",
        "|---|---|---|---|---|",
    ]
    for fw in fws:
        base = stats.get((fw, "plain"))
        for me in methods:
            am, asd, um, usd = stats[fw, me]
            gain = "" if me == "plain" or base is None else f"{um - base[2]:+.3f} ({(um - base[2]) / max(base[3], 1e-6):+.1f} std)"
            lines.append(f"| {fw} | {me} | {am:.3f} +- {asd:.3f} | {um:.3f} +- {usd:.3f} | {gain} |")
    (out.with_suffix(".md")).write_text("\n".join(lines) + "\n")
    (out.with_suffix(".json")).write_text(json.dumps({"rows": rows, "floor": floor, "args": vars(a)}, indent=1, default=str))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(fws), 3.4), dpi=130)
    w = 0.8 / len(methods)
    for k, me in enumerate(methods):
        xs = np.arange(len(fws)) + (k - (len(methods) - 1) / 2) * w
        ax.bar(xs, [stats[f, me][2] for f in fws], w, yerr=[stats[f, me][3] for f in fws], label=me, capsize=2)
    ax.axhline(fa.mean(), color="k", ls="--", lw=1, label="random init")
    ax.set_xticks(np.arange(len(fws)), fws)
    ax.set_ylabel("linear-probe macro AUC")
    ax.set_ylim(max(0.0, min(fa.mean(), min(s[2] for s in stats.values())) - 0.1), 1.0)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
