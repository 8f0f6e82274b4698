"""What gaze-guided pre-training is worth: every method against its plain baseline, paired by seed.

Protocol (README, *What gaze-guided pre-training is worth*):

1. One synthetic study set (``--n`` images; generator splits 70 % train / 10 % validate /
   20 % test). Pre-training uses every training image *without labels*; the labelled set is
   ``--labelled`` training images drawn per seed, evaluated at ``--fractions`` of it.
2. The gaze relation (TIMA) and the FocusContrast attention predictor come from the
   training split's gaze only. TIMA's ``eps`` is chosen by the relation's class signal on the
   **validation** images' gaze; McGIP's threshold, GzPT's drop probability and
   FocusContrast's ``q`` by a linear probe on the **validation** split (10 % labels, seed
   0, the first framework); the test split is used for the table only.
3. Per seed (same labelled subset, same initialisation, same view seeds for every method):
   random-init encoder (linear probe), supervised from scratch (fine-tune of the random
   init), plain pre-training per framework, then McGIP, GzPT, FocusContrast and
   McGIP + FocusContrast. Each encoder is scored by linear probe and by fine-tune at each
   label fraction: macro ROC AUC over the five findings on the test split.
4. Statistics: mean, std (ddof 1) over seeds and the paired difference to the same
   framework's plain run with a 95 % t interval (``gazerad.pretrain.diagnostics``).
5. Diagnostics: the relation's class signal (TIMA and the moment / MultiMatch / CC
   alternatives at the chosen threshold), the crop's lesion-keeping rate with and without
   attention, each run's loss curve (``history`` in the JSON).

    python benchmarks/ssl_benefit.py                 # the full table (sized for <= 2 h on 2 cores)
    python benchmarks/ssl_benefit.py --quick         # minutes: the pipeline's structure (CI)
    python benchmarks/ssl_benefit.py --device cuda --n 20000 --image-size 128 --epochs 100 --seeds 0 1 2 3 4

Writes ``OUT.json`` (one row per framework, method, label fraction and protocol with
``mean``, ``std``, ``seeds``, ``diff_vs_plain``, ``ci_low``, ``ci_high``; rows for
``random_init`` and ``supervised``; the settings, chosen hyper-parameters and diagnostics),
``OUT.md`` and ``OUT.png`` (default OUT: ``benchmarks/results/ssl_benefit``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
FRAMEWORKS = ("simclr", "moco", "byol", "simsiam")
METHODS = ("plain", "mcgip", "gzpt", "focuscontrast", "mcgip+focuscontrast")
PROTOCOLS = ("linear", "finetune")
MIN_LABELLED = 8  # the smallest labelled subset (1 % of 300 would be 3 images)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny settings: checks the pipeline, not the result")
    ap.add_argument("--studies", default=None, help="an existing study folder (default: generate --n studies)")
    ap.add_argument("--n", type=int, default=2000, help="studies to generate (70 %% of them pre-train)")
    ap.add_argument("--synth-size", type=int, default=256, help="side of the generated images")
    ap.add_argument("--labelled", type=int, default=300, help="labelled training images per seed (the 100 %% fraction)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    ap.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=8, help="pre-training epochs")
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--backbone", default="resnet10")
    ap.add_argument("--eps-grid", type=float, nargs="+", default=[0.05, 0.1, 0.2], help="TIMA eps candidates (validation class signal)")
    ap.add_argument("--threshold-grid", type=float, nargs="+", default=[0.6, 0.8], help="McGIP threshold candidates (validation probe)")
    ap.add_argument("--drop-grid", type=float, nargs="+", default=[0.5], help="GzPT drop-p candidates (validation probe)")
    ap.add_argument("--q-grid", type=float, nargs="+", default=[0.5, 0.7], help="FocusContrast q candidates (validation probe)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(RESULTS / "ssl_benefit"))
    ap.add_argument("--work", default=None, help="folder for studies and runs (default: a temporary one)")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.synth_size, a.labelled, a.fractions = 60, 128, 24, [0.25, 1.0]
        a.seeds, a.image_size, a.epochs, a.finetune_epochs, a.batch_size = a.seeds[:2] if len(a.seeds) >= 2 else [0, 1], 32, 1, 1, 16
        a.eps_grid, a.threshold_grid, a.drop_grid, a.q_grid = a.eps_grid[:2], a.threshold_grid[:1], a.drop_grid[:1], a.q_grid[:1]
    if len(a.seeds) < 2:
        ap.error("need >= 2 seeds for a std and a paired interval")
    return a


class Bench:
    """The study set, its splits, images, gaze assets and every run of one benchmark."""

    def __init__(self, a: argparse.Namespace) -> None:
        from gazerad.data.inputs import encoder_inputs
        from gazerad.pretrain.data import read_study_table
        from gazerad.synth.study import generate_studies

        self.a = a
        self.work = Path(a.work or tempfile.mkdtemp(prefix="gazerad-ssl-benefit-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.studies = Path(a.studies) if a.studies else self.work / "studies"
        if not a.studies and not (self.studies / "labels.csv").is_file():
            generate_studies(self.studies, n=a.n, seed=0, size=a.synth_size, workers=2, progress=not a.quick)
        self.table = read_study_table(self.studies)
        self.train, self.val, self.test = (self.table.subset(s) for s in ("train", "validate", "test"))
        if len(self.train) < a.labelled:
            raise SystemExit(f"{len(self.train)} training images, fewer than --labelled {a.labelled}")
        self.images = encoder_inputs(self.table.paths, a.image_size, progress=not a.quick)
        self.log: dict[str, Any] = {}
        self.runs: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ splits
    def labelled(self, seed: int, fraction: float) -> np.ndarray:
        """Nested labelled subsets of the training split: the first ``fraction`` of a per-seed order
        (at least :data:`MIN_LABELLED` images)."""
        order = np.random.default_rng(1000 + seed).permutation(self.train)[: self.a.labelled]
        return np.sort(order[: max(MIN_LABELLED, int(round(fraction * len(order))))])

    # ------------------------------------------------------------------ gaze assets
    def relations(self) -> None:
        """TIMA relation with eps chosen on the validation images' class signal; alternatives' signal."""
        from gazerad.gaze import load_gaze
        from gazerad.gaze.relation import compute_relation
        from gazerad.pretrain.diagnostics import relation_class_signal

        gaze = load_gaze(self.studies)
        ids, labels = self.table.ids, self.table.labels
        val_ids = [ids[i] for i in self.val]
        thr = self.a.threshold_grid[len(self.a.threshold_grid) // 2]
        eps_signal = {}
        for eps in self.a.eps_grid:
            rel = compute_relation(gaze, "tima", image_ids=val_ids, progress=False, eps=eps)
            eps_signal[eps] = relation_class_signal(rel.dense(), labels[self.val], thr)
        best = max(eps_signal, key=lambda e: np.nan_to_num(eps_signal[e]["lift"], nan=-1.0))
        train_ids = [ids[i] for i in self.train]
        rel = compute_relation(gaze, "tima", image_ids=train_ids, progress=False, eps=best)
        self.relation = self.work / "relation_tima.npz"
        rel.save(self.relation)
        alt = {}
        for scheme in ("moment", "multimatch", "cc"):
            r = compute_relation(gaze, scheme, image_ids=val_ids, progress=False)
            alt[scheme] = relation_class_signal(r.dense(), labels[self.val], thr)
        self.log["relation"] = {
            "scheme": "tima",
            "eps": best,
            "eps_on_validation": {str(k): v for k, v in eps_signal.items()},
            "train_signal": {str(t): relation_class_signal(rel.dense(), labels[self.train], t) for t in self.a.threshold_grid},
            "alternatives_on_validation": alt,
            "threshold_for_signal": thr,
        }
        print(
            f"relation: TIMA eps {best} (validation lift {eps_signal[best]['lift']:.2f}); alternatives "
            + ", ".join(f"{k} lift {v['lift']:.2f}" for k, v in alt.items()),
            flush=True,
        )

    def attention(self) -> None:
        """The FocusContrast predictor (training split's gaze) and the crop's lesion-keeping rate on test images."""
        from gazerad.attention import AttentionRandResizedCrop, load_attention_model, predict_attention, train_attention
        from gazerad.data.nih import read_bbox_list
        from gazerad.io.xray import read_xray
        from gazerad.pretrain.diagnostics import lesion_keep_rate

        a = self.a
        res = train_attention(
            self.studies, self.work / "attention", epochs=2 if a.quick else 12, batch_size=16, image_size=a.image_size, progress=False, device=a.device
        )
        self.attention_model = self.work / "attention" / "attention.pt"
        boxes = read_bbox_list(self.studies / "BBox_List_2017.csv")
        test = [i for i in self.test if boxes.get(self.table.ids[i])][: 8 if a.quick else 60]
        imgs = np.stack([read_xray(self.table.paths[i])[0] for i in test]).astype(np.float32)[:, None]
        maps = list(predict_attention(load_attention_model(self.attention_model), imgs)[:, 0])
        first = [boxes[self.table.ids[i]][0][1] for i in test]
        keep = {}
        for q in sorted({0.0, *a.q_grid}):
            crop = AttentionRandResizedCrop(a.image_size, q=q)
            keep[str(q)] = lesion_keep_rate(crop, imgs.shape[-2:], first, [m if q > 0 else None for m in maps])
        self.log["attention"] = {"heldout": res["heldout"], "centre_prior": res["centre_prior"], "lesion_keep_rate": keep, "n_images": len(test)}
        print(
            "attention: held-out CC %.3f (centre prior %.3f); lesion kept "
            % (res["heldout"].get("cc", float("nan")), res["centre_prior"].get("cc", float("nan")))
            + ", ".join(f"q={k}: {v:.2f}" for k, v in keep.items()),
            flush=True,
        )

    # ------------------------------------------------------------------ runs
    def pretrain(self, framework: str, method: str, seed: int, hp: dict[str, float]) -> tuple[Path, list[dict]]:
        from gazerad.pretrain import PretrainConfig, pretrain

        a = self.a
        extra: dict[str, Any] = {}
        if "mcgip" in method or method == "gzpt":
            extra.update(relation=str(self.relation), threshold=hp["threshold"], drop_p=hp["drop_p"] if method == "gzpt" else 0.0)
        if "focuscontrast" in method:
            extra.update(attention=str(self.attention_model), q=hp["q"])
        settings = dict(
            framework=framework,
            backbone=a.backbone,
            image_size=a.image_size,
            epochs=a.epochs,
            batch_size=a.batch_size,
            lr=a.lr,
            proj_dim=64,
            hidden_dim=256,
            queue_size=512,
            seed=seed,
            **extra,
        )
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]  # a run folder per distinct run
        out = self.work / "runs" / f"{framework}-{method}-s{seed}-{key}"
        done = out / "history.json"
        if (out / "encoder.pt").is_file() and done.is_file() and not (out / "checkpoint.pt").exists():
            return out / "encoder.pt", json.loads(done.read_text())["history"]  # finished earlier
        res = pretrain(PretrainConfig(data=str(self.studies), out=str(out), device=a.device, progress=False, **settings))
        # a finished run needs only its encoder and history; its resume state (model, momentum
        # encoder, optimiser: ~80 MB at ResNet-10) would fill the disk over dozens of runs
        (out / "checkpoint.pt").unlink(missing_ok=True)
        return out / "encoder.pt", res["history"]

    def score(
        self, encoder: Path | None, seed: int, protocol: str, fraction: float, test: np.ndarray | None = None, features: np.ndarray | None = None
    ) -> float:
        from gazerad.pretrain import evaluate_encoder

        res = evaluate_encoder(
            encoder,
            self.studies,
            protocol=protocol,
            backbone=self.a.backbone,
            image_size=self.a.image_size,
            epochs=self.a.finetune_epochs,
            seed=seed,
            device=self.a.device,
            images=self.images,
            train_rows=self.labelled(seed, fraction),
            test_rows=self.test if test is None else test,
            features=features,
        )
        return float(res["auc"])

    def features(self, encoder: Path | None, seed: int) -> np.ndarray:
        import torch

        from gazerad.pretrain.evaluate import extract_features
        from gazerad.pretrain.trainer import load_encoder
        from gazerad.ssl import build_backbone

        if encoder is None:
            torch.manual_seed(seed)
            net, _ = build_backbone(self.a.backbone)
        else:
            net, _ = load_encoder(encoder, self.a.device or "cpu")
        return extract_features(net, self.images, self.a.image_size, device=self.a.device or "cpu")

    def tune(self) -> dict[str, float]:
        """Gaze hyper-parameters by a validation-split linear probe (10 % labels, seed 0, first framework)."""
        fw, frac = self.a.frameworks[0], 0.1 if 0.1 in self.a.fractions else self.a.fractions[0]
        chosen = {"threshold": self.a.threshold_grid[0], "drop_p": self.a.drop_grid[0], "q": self.a.q_grid[0]}
        trials = {}
        for key, grid, method in (("threshold", self.a.threshold_grid, "mcgip"), ("drop_p", self.a.drop_grid, "gzpt"), ("q", self.a.q_grid, "focuscontrast")):
            if method not in self.a.methods or len(grid) < 2:
                continue
            vals = {}
            for v in grid:
                enc, _ = self.pretrain(fw, method, 0, {**chosen, key: v})
                vals[v] = self.score(enc, 0, "linear", frac, test=self.val, features=self.features(enc, 0))
            chosen[key] = max(vals, key=vals.get)
            trials[key] = {str(k): v for k, v in vals.items()}
            print(f"validation: {method} {key} {trials[key]} -> {chosen[key]}", flush=True)
        self.log["hyperparameters"] = {"chosen": chosen, "validation_auc": trials, "on": f"{fw}, seed 0, linear probe at {frac:.0%} labels, validation split"}
        return chosen

    def run(self) -> list[dict[str, Any]]:
        a = self.a
        t0 = time.perf_counter()
        if any(m != "plain" for m in a.methods):
            if any("mcgip" in m or m == "gzpt" for m in a.methods):
                self.relations()
            if any("focuscontrast" in m for m in a.methods):
                self.attention()
        hp = self.tune()
        scores: dict[tuple, dict[int, float]] = {}

        def put(key: tuple, seed: int, value: float) -> None:
            scores.setdefault(key, {})[seed] = value

        total = len(a.seeds) * (1 + len(a.frameworks) * len(a.methods))
        done = 0
        for seed in a.seeds:
            feats = self.features(None, seed)
            for frac in a.fractions:
                put(("random_init", "-", frac, "linear"), seed, self.score(None, seed, "linear", frac, features=feats))
                if "finetune" in a.protocols:
                    put(("supervised", "-", frac, "finetune"), seed, self.score(None, seed, "finetune", frac))
            done += 1
            for fw in a.frameworks:
                for method in a.methods:
                    t = time.perf_counter()
                    enc, hist = self.pretrain(fw, method, seed, hp)
                    feats = self.features(enc, seed) if "linear" in a.protocols else None
                    for frac in a.fractions:
                        for proto in a.protocols:
                            put((fw, method, frac, proto), seed, self.score(enc, seed, proto, frac, features=feats if proto == "linear" else None))
                    self.runs.append({"framework": fw, "method": method, "seed": seed, "history": hist, "seconds": time.perf_counter() - t})
                    done += 1
                    key = (fw, method, 0.1 if 0.1 in a.fractions else a.fractions[-1], "linear")
                    print(
                        f"[{done}/{total}] {fw:8s} {method:20s} seed {seed}: linear AUC {scores.get(key, {}).get(seed, float('nan')):.3f} "
                        f"({time.perf_counter() - t:.0f} s; elapsed {time.perf_counter() - t0:.0f} s)",
                        flush=True,
                    )
        rows = []
        from gazerad.pretrain.diagnostics import paired_summary

        for (fw, method, frac, proto), vals in scores.items():
            base = scores.get((fw, "plain", frac, proto)) if fw in FRAMEWORKS and method != "plain" else None
            rows.append(
                {
                    "framework": fw,
                    "method": method,
                    "fraction": frac,
                    "protocol": proto,
                    **paired_summary(vals, base),
                    "values": {str(k): v for k, v in vals.items()},
                }
            )
        for r in rows:  # plain pre-training against the random-init encoder (the precondition)
            if r["method"] == "plain":
                ref = scores.get(("random_init", "-", r["fraction"], "linear") if r["protocol"] == "linear" else ("supervised", "-", r["fraction"], "finetune"))
                s = paired_summary(scores[(r["framework"], "plain", r["fraction"], r["protocol"])], ref)
                r["vs_random_init"] = {k: s[k] for k in ("diff_vs_plain", "ci_low", "ci_high")}
        self.log["seconds"] = time.perf_counter() - t0
        return rows


def precondition(rows: list[dict[str, Any]], fraction: float = 0.1) -> list[dict[str, Any]]:
    """Plain pre-training vs the random-init encoder on the linear probe at ``fraction``: margin in random-init stds."""
    rand = next((r for r in rows if r["framework"] == "random_init" and r["fraction"] == fraction and r["protocol"] == "linear"), None)
    out = []
    for r in rows:
        if r["method"] == "plain" and r["fraction"] == fraction and r["protocol"] == "linear" and rand is not None:
            sd = max(rand["std"], r["std"], 1e-9)
            out.append(
                {
                    "framework": r["framework"],
                    "plain": r["mean"],
                    "random_init": rand["mean"],
                    "margin_in_std": (r["mean"] - rand["mean"]) / sd,
                    "holds": (r["mean"] - rand["mean"]) > 3 * sd,
                }
            )
    return out


def write(rows: list[dict[str, Any]], bench: Bench, out: Path) -> None:
    from matplotlib.figure import Figure

    a = bench.a
    out.parent.mkdir(parents=True, exist_ok=True)
    pre = precondition(rows, 0.1 if 0.1 in a.fractions else a.fractions[0])
    settings = {k: v for k, v in vars(a).items() if k not in ("out", "work")}
    payload = {
        "rows": rows,
        "precondition": pre,
        "settings": settings,
        "diagnostics": bench.log,
        "runs": bench.runs,
        "n_images": {"train_unlabelled": len(bench.train), "validate": len(bench.val), "test": len(bench.test), "labelled": a.labelled},
    }
    from gazerad.io.atomic import atomic_write_text

    atomic_write_text(out.with_suffix(".json"), json.dumps(payload, indent=1, default=float))

    def fmt(r: dict) -> str:
        s = f"{r['mean']:.3f} ± {r['std']:.3f}"
        if r.get("diff_vs_plain") is not None and r.get("ci_low") is not None:
            s += f" ({r['diff_vs_plain']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}])"
        return s

    lines = [
        f"# Gaze-guided pre-training vs its baselines (macro ROC AUC on {len(bench.test)} test images; "
        f"{len(a.seeds)} seeds {a.seeds}; {len(bench.train)} unlabelled pre-training images, {a.labelled} labelled at fractions {a.fractions})",
        "",
        "Cells: mean ± std over seeds (paired difference to the same framework's plain run, 95 % CI). "
        f"{a.image_size} px, {a.backbone}, {a.epochs} pre-training epochs, {a.finetune_epochs} fine-tune epochs.",
        "",
    ]
    for proto in a.protocols:
        for frac in a.fractions:
            lines += [f"## {proto}, {frac:.0%} of the labelled set", "", "| framework | " + " | ".join(a.methods) + " |", "|---" * (len(a.methods) + 1) + "|"]
            for fw in a.frameworks:
                cells = [
                    fmt(r) for m in a.methods for r in rows if r["framework"] == fw and r["method"] == m and r["fraction"] == frac and r["protocol"] == proto
                ]
                lines.append(f"| {fw} | " + " | ".join(cells) + " |")
            base = [r for r in rows if r["framework"] in ("random_init", "supervised") and r["fraction"] == frac and r["protocol"] == proto]
            lines += [""] + [f"{r['framework']}: {fmt(r)}" for r in base] + [""]
    lines += ["## Precondition (plain vs random init, linear probe)", ""] + [
        f"- {p['framework']}: plain {p['plain']:.3f} vs random {p['random_init']:.3f}: {p['margin_in_std']:+.1f} std -> "
        + ("holds" if p["holds"] else "does not hold")
        for p in pre
    ]
    hp = bench.log.get("hyperparameters", {})
    lines += ["", f"Hyper-parameters chosen on the validation split ({hp.get('on', '')}): {hp.get('chosen')}; trials {hp.get('validation_auc')}"]
    if "relation" in bench.log:
        lines += [
            f"Relation: TIMA eps {bench.log['relation']['eps']} (validation class signal {bench.log['relation']['eps_on_validation']})",
            f"Alternatives on validation: {bench.log['relation']['alternatives_on_validation']}",
        ]
    if "attention" in bench.log:
        lines += [f"Attention: held-out {bench.log['attention']['heldout']}; lesion-keeping rate by q {bench.log['attention']['lesion_keep_rate']}"]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")

    fig = Figure(figsize=(3.2 * len(a.fractions), 3.4 * len(a.protocols)))
    for pi, proto in enumerate(a.protocols):
        for fi, frac in enumerate(a.fractions):
            ax = fig.add_subplot(len(a.protocols), len(a.fractions), pi * len(a.fractions) + fi + 1)
            w = 0.8 / len(a.methods)
            for mi, m in enumerate(a.methods):
                sel = [
                    next((r for r in rows if r["framework"] == fw and r["method"] == m and r["fraction"] == frac and r["protocol"] == proto), None)
                    for fw in a.frameworks
                ]
                ax.bar(
                    [i + mi * w for i in range(len(a.frameworks))],
                    [r["mean"] if r else 0 for r in sel],
                    w,
                    yerr=[r["std"] if r else 0 for r in sel],
                    label=m,
                    capsize=2,
                )
            for r in rows:
                if r["framework"] in ("random_init", "supervised") and r["fraction"] == frac and r["protocol"] == proto:
                    ax.axhline(r["mean"], ls="--", lw=0.8, color="k" if r["framework"] == "random_init" else "r", label=r["framework"])
            ax.set_xticks([i + w * (len(a.methods) - 1) / 2 for i in range(len(a.frameworks))], a.frameworks, fontsize=7)
            ax.set_title(f"{proto}, {frac:.0%} labels", fontsize=8)
            ax.set_ylim(0.4, 1.0)
            if pi == fi == 0:
                ax.legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    bench = Bench(a)
    rows = bench.run()
    write(rows, bench, Path(a.out))
    print(Path(a.out).with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
