"""The ``gazerad`` command line: ``gazerad --help`` lists the sub-commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gazerad import __version__
from gazerad.errors import GazeRadError


def _cmd_synth(args: argparse.Namespace) -> int:
    from gazerad.synth.study import generate_studies

    s = generate_studies(
        args.out, n=args.n, seed=args.seed, size=args.size, dicom=args.dicom,
        workers=args.workers, overwrite=args.overwrite, progress=not args.quiet,
    )
    print(
        f"wrote {s.n_images} studies ({s.n_readings} readings, {s.n_findings} findings, "
        f"{100 * s.no_finding_fraction:.0f}% No Finding) to {s.out} in {s.seconds:.1f} s"
    )
    if args.preview:
        from gazerad.viz import study_preview

        png = study_preview(s.out, args.preview)
        print(f"preview: {png}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from gazerad.viz import study_preview

    out = args.out or Path(args.studies) / "preview.png"
    print(f"preview: {study_preview(args.studies, out, image_id=args.image)}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from gazerad.io.xray import read_xray

    window = tuple(args.window) if args.window else None
    for path in args.paths:
        image, meta = read_xray(path, voi="lut" if args.voi_lut else None, window=window)
        meta = {k: v for k, v in meta.items() if k != "affine"}
        meta.update(min=float(image.min()), max=float(image.max()), mean=float(image.mean()))
        print(json.dumps(meta, default=str))
    return 0


def _parse_params(items: list[str] | None) -> dict:
    params = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--param expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            params[k] = json.loads(v)
        except json.JSONDecodeError:
            params[k] = v
    return params


def _cmd_relation(args: argparse.Namespace) -> int:
    import os

    from gazerad.gaze.importers import load_gaze
    from gazerad.gaze.relation import compute_relation, compute_relation_distributed

    gaze = load_gaze(args.gaze)
    if len(gaze) == 0:
        raise ValueError(f"{args.gaze}: no usable gaze records")
    image_ids = None
    if args.images:
        from gazerad.data import read_labels

        image_ids = list(read_labels(args.images))
    kw = dict(
        gaze=gaze, scheme=args.scheme, image_ids=image_ids, aggregate=args.aggregate, top_k=args.top_k,
        threshold=args.threshold, block_size=args.block_size, workers=args.workers, cache_dir=args.cache,
        progress=not args.quiet, **_parse_params(args.param),
    )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        rel = compute_relation_distributed(args.out, **kw)
        if rel is None:
            return 0
    else:
        if args.shard:
            i, n = (int(v) for v in args.shard.split("/"))
            kw["shard"] = (i, n)
        rel = compute_relation(**kw)
        rel.save(args.out)
    n = len(rel.image_ids)
    what = "shard" if rel.partial is not None else ("sparse" if rel.is_sparse else "dense")
    nnz = f", {rel.matrix.nnz} non-zeros" if rel.partial is None and rel.is_sparse else ""
    dropped = f"; dropped while importing: {gaze.dropped}" if gaze.dropped else ""
    print(f"relation[{rel.scheme}] {what} {n} x {n}{nnz} from {len(gaze.records())} readings -> {args.out}{dropped}")
    return 0


def _cmd_relation_merge(args: argparse.Namespace) -> int:
    from gazerad.gaze.relation import merge_relations

    rel = merge_relations(args.parts)
    rel.save(args.out)
    print(f"merged {len(args.parts)} shards -> {args.out} ({len(rel.image_ids)} images)")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from gazerad.pretrain.trainer import PretrainConfig, load_config, pretrain

    flags = {k: getattr(args, k) for k in _PRETRAIN_FLAGS if getattr(args, k, None) is not None}
    if args.quiet:
        flags["progress"] = False
    if args.no_amp:
        flags["amp"] = False
    if args.config:
        cfg = load_config(args.config, flags)
    else:
        missing = [k for k in ("data", "out") if k not in flags]
        if missing:
            raise ValueError("--" + " and --".join(missing) + " required (or --config FILE)")
        cfg = PretrainConfig(**flags)
    res = pretrain(cfg)
    if "encoder" in res:
        last = res["history"][-1]["loss"] if res["history"] else float("nan")
        print(f"pretrain {cfg.framework} [{cfg.method}]: {res['steps']} steps in {res['seconds']:.1f} s, "
              f"final loss {last:.4f} -> {res['encoder']}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from gazerad.pretrain.evaluate import evaluate_encoder

    res = evaluate_encoder(
        None if args.encoder == "random" else args.encoder, args.data, protocol=args.protocol, task=args.task,
        backbone=args.backbone, image_size=args.size, epochs=args.epochs, seed=args.seed, device=args.device,
    )
    if args.out:
        from gazerad.io.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps(res, indent=1))
    print(json.dumps(res))
    return 0


def _cmd_train_attention(args: argparse.Namespace) -> int:
    from gazerad.attention.training import run_train_attention

    return run_train_attention(args)


def _cmd_train_kacl(args: argparse.Namespace) -> int:
    from gazerad.kacl import KACLConfig, train_kacl

    flags = {k: getattr(args, k) for k in _KACL_FLAGS if getattr(args, k, None) is not None}
    flags["progress"] = not args.quiet
    flags["amp"] = not args.no_amp
    cfg = KACLConfig(**flags)
    res = train_kacl(cfg)
    if "model" in res:
        h = res["history"][-1] if res["history"] else {}
        print(f"train-kacl [{cfg.method}]: {res['steps']} steps in {res['seconds']:.1f} s, final loss {h.get('loss', float('nan')):.4f}"
              f" -> {res['model']}")
    return 0


def _cmd_evaluate_localization(args: argparse.Namespace) -> int:
    from gazerad.kacl import evaluate_kacl

    res = evaluate_kacl(args.model, args.data, splits=args.splits, boxes_csv=args.boxes, out=args.out,
                        overlays=args.overlays, cam_method=args.cam, cam_threshold=args.threshold, device=args.device)
    auc = res["auc"]
    print("ROC AUC  " + "  ".join(f"{k} {v:.3f}" for k, v in auc.items()))
    if "localization" in res:
        loc, base = res["localization"]["overall"], res["baseline_centred"]["overall"]
        print("T(IoU)        " + "  ".join(f"{t:>5}" for t in loc))
        print("accuracy      " + "  ".join(f"{v:5.3f}" for v in loc.values()))
        print("centred box   " + "  ".join(f"{v:5.3f}" for v in base.values()))
    if args.out:
        print(f"metrics and overlays in {args.out}")
    return 0


_KACL_FLAGS = (
    "data", "out", "method", "backbone", "image_size", "epochs", "batch_size", "lr", "labelled_fraction", "temperature",
    "w_cls", "w_con", "refresh_every", "cam_method", "cam_layer", "bin_width", "radiomics_backend", "seed", "device", "max_steps", "init_encoder",
    "precision",
)


_PRETRAIN_FLAGS = (
    "data", "out", "framework", "backbone", "image_size", "epochs", "batch_size", "lr", "relation", "threshold",
    "drop_p", "attention", "q", "seed", "device", "workers", "temperature", "queue_size", "max_steps", "splits", "precision",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gazerad",
        description="Gaze- and knowledge-guided contrastive learning for X-ray models (McGIP/GzPT, FocusContrast, KACL).",
    )
    p.add_argument("--version", action="version", version=f"gazerad {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("synth", help="generate synthetic chest X-ray studies with simulated radiologist gaze")
    s.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    s.add_argument("--n", type=int, default=200, help="number of images (default 200)")
    s.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    s.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    s.add_argument("--dicom", action="store_true", help="also write DICOM DX copies (30%% MONOCHROME1)")
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing study set (atomically)")
    s.add_argument("--preview", metavar="PNG", help="also write a preview picture of one study")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_synth)

    s = sub.add_parser("show", help="picture of a study: finding boxes and readers' scanpaths")
    s.add_argument("--studies", required=True, help="study folder (as written by 'gazerad synth')")
    s.add_argument("--image", default=None, help="Image Index to show (default: one with findings and gaze)")
    s.add_argument("--out", default=None, help="PNG path (default STUDIES/preview.png)")
    s.set_defaults(func=_cmd_show)

    s = sub.add_parser("relation", help="gaze-similarity relation matrix over images (McGIP/GzPT); torchrun-aware")
    s.add_argument("--gaze", required=True, help="gaze data: REFLACX main_data folder, study folder, EGD-CXR/McGIP/generic file")
    s.add_argument("--scheme", default="tima", help="tima, moment, dhash, multimatch, cc, kl, dtw (default tima)")
    s.add_argument("--param", action="append", metavar="KEY=VALUE", help="scheme parameter (JSON value), repeatable")
    s.add_argument("--out", required=True, help="output .npz")
    s.add_argument("--images", default=None, help="labels CSV whose 'Image Index' order gives the rows (default: gaze order)")
    s.add_argument("--aggregate", default="mean", choices=["mean", "max"], help="over reader pairs (default mean)")
    s.add_argument("--top-k", type=int, default=None, help="sparse output: keep the top K per row")
    s.add_argument("--threshold", type=float, default=None, help="sparse output: keep values >= T")
    s.add_argument("--block-size", type=int, default=256, help="images per block (default 256)")
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--shard", default=None, metavar="I/N", help="compute shard I of N (merge with relation-merge)")
    s.add_argument("--cache", default=None, metavar="DIR", help="cache results by content in DIR")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_relation)

    s = sub.add_parser("relation-merge", help="merge relation shards written with --shard")
    s.add_argument("parts", nargs="+")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_cmd_relation_merge)

    s = sub.add_parser("pretrain", help="contrastive pre-training: SimCLR/MoCo/BYOL/SimSiam, +McGIP/GzPT, +FocusContrast")
    s.add_argument("--config", default=None, help="JSON/YAML config (MONAI bundle style); flags override it")
    s.add_argument("--data", default=None, help="study folder (labels.csv + images/)")
    s.add_argument("--out", default=None, help="run folder (resumes from OUT/checkpoint.pt when present)")
    s.add_argument("--framework", default=None, choices=["simclr", "moco", "byol", "simsiam"], help="default simclr")
    s.add_argument("--backbone", default=None, help="resnet18 (default), resnet50, densenet121, resnet10")
    s.add_argument("--size", dest="image_size", type=int, default=None, help="view side in px (default 128)")
    s.add_argument("--splits", nargs="+", default=None, help="labels.csv splits to pre-train on (default: train)")
    s.add_argument("--epochs", type=int, default=None)
    s.add_argument("--batch-size", type=int, default=None, help="global batch (default 64)")
    s.add_argument("--lr", type=float, default=None)
    s.add_argument("--temperature", type=float, default=None)
    s.add_argument("--queue-size", type=int, default=None, help="MoCo queue length")
    s.add_argument("--relation", default=None, help="McGIP/GzPT: relation .npz from 'gazerad relation'")
    s.add_argument("--threshold", type=float, default=None, help="relation value above which a pair is positive (0.5)")
    s.add_argument("--drop-p", type=float, default=None, help="GzPT: drop each gaze positive with probability P (0)")
    s.add_argument("--attention", default=None, help="FocusContrast: attention.pt from 'gazerad train-attention'")
    s.add_argument("--q", type=float, default=None, help="FocusContrast: attention mass a view keeps (0.5)")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present)")
    s.add_argument("--workers", type=int, default=None, help="data loader processes (default 0)")
    s.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    s.add_argument("--no-amp", action="store_true", help="no mixed precision (same as --precision fp32)")
    s.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto (default): bf16 autocast on CPUs with native bf16, fp16 on CUDA; fp32 forces float32")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.set_defaults(func=_cmd_pretrain)

    s = sub.add_parser("evaluate", help="evaluate a pre-trained encoder: linear probe, k-NN or fine-tune")
    s.add_argument("--encoder", required=True, help="encoder.pt or run folder, or 'random' for an untrained backbone")
    s.add_argument("--data", required=True, help="study folder; train split trains, test+validate score")
    s.add_argument("--protocol", default="linear", choices=["linear", "knn", "finetune"])
    s.add_argument("--task", default="multilabel", choices=["multilabel", "multiclass", "ordinal"])
    s.add_argument("--backbone", default=None, help="with --encoder random")
    s.add_argument("--size", type=int, default=None, help="input side (default: the encoder's)")
    s.add_argument("--epochs", type=int, default=10, help="fine-tune epochs")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default=None)
    s.add_argument("--out", default=None, help="also write the metrics JSON here")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser(
        "train-attention", help="train the FocusContrast attention predictor on gaze heatmaps; print held-out metrics"
    )
    s.add_argument("--studies", required=True, help="study folder (images/, labels.csv with a split column, gaze)")
    s.add_argument("--out", required=True, help="output folder: attention.pt, metrics.json, curve.png, overlay.png")
    s.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    s.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    s.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3, cosine decay)")
    s.add_argument("--size", type=int, default=128, help="model input side, a multiple of 16 (default 128)")
    s.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    s.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto (default): bf16 autocast on CPUs with native bf16, fp16 on CUDA; fp32 forces float32")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_train_attention)

    s = sub.add_parser("train-kacl", help="KACL: classifier + radiomics of its Grad-CAM region as positive view (or --method supervised)")
    s.add_argument("--data", required=True, help="study folder (labels.csv with split, images/)")
    s.add_argument("--out", required=True, help="run folder: kacl.pt, checkpoint.pt (resume), history.json, loss.png, tb/")
    s.add_argument("--method", default="kacl", choices=["kacl", "supervised"])
    s.add_argument("--backbone", default="densenet121", choices=["densenet121", "resnet10", "resnet18", "resnet50"])
    s.add_argument("--image-size", dest="image_size", type=int, default=None, help="input side (default 224)")
    s.add_argument("--epochs", type=int, default=None)
    s.add_argument("--batch-size", dest="batch_size", type=int, default=None, help="global batch (default 32)")
    s.add_argument("--lr", type=float, default=None)
    s.add_argument("--labelled-fraction", dest="labelled_fraction", type=float, default=None, help="fraction of training images with labels (default 1)")
    s.add_argument("--temperature", type=float, default=None, help="NT-Xent temperature (default 0.5)")
    s.add_argument("--w-cls", dest="w_cls", type=float, default=None, help="BCE weight (default 0.7)")
    s.add_argument("--w-con", dest="w_con", type=float, default=None, help="contrastive weight (default 0.3)")
    s.add_argument("--refresh-every", dest="refresh_every", type=int, default=None,
                   help="recompute CAM ROIs and radiomics every K steps (default: every epoch)")
    s.add_argument("--cam", dest="cam_method", default=None, choices=["gradcam", "gradcampp"])
    s.add_argument("--cam-layer", dest="cam_layer", default=None, help="module Grad-CAM hooks, e.g. backbone.layer3 (default: last block)")
    s.add_argument("--bin-width", dest="bin_width", type=float, default=None, help="radiomics bin width on 0..255 intensities (default 8)")
    s.add_argument("--radiomics-backend", dest="radiomics_backend", default=None, choices=["torch", "pyradiomics"])
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--device", default=None)
    s.add_argument("--max-steps", dest="max_steps", type=int, default=None)
    s.add_argument("--init-encoder", dest="init_encoder", default=None, help="encoder.pt of 'gazerad pretrain' to start the backbone from (fine-tuning)")
    s.add_argument("--no-amp", action="store_true", help="no mixed precision (same as --precision fp32)")
    s.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto (default): bf16 autocast on CPUs with native bf16, fp16 on CUDA; fp32 forces float32")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.set_defaults(func=_cmd_train_kacl)

    s = sub.add_parser("evaluate-localization", help="per-class ROC AUC and T(IoU) localisation accuracy of a KACL/classifier run")
    s.add_argument("--model", required=True, help="kacl.pt or its run folder")
    s.add_argument("--data", required=True, help="study folder")
    s.add_argument("--boxes", default=None, help="BBox_List_2017.csv (default: DATA/BBox_List_2017.csv)")
    s.add_argument("--splits", nargs="+", default=["test", "validate"])
    s.add_argument("--out", default=None, help="folder for metrics.json and overlays/")
    s.add_argument("--overlays", type=int, default=8, help="overlay PNGs to write (default 8)")
    s.add_argument("--cam", default="gradcam", choices=["gradcam", "gradcampp"])
    s.add_argument("--threshold", type=float, default=0.5, help="CAM threshold after normalisation and blur")
    s.add_argument("--device", default=None)
    s.set_defaults(func=_cmd_evaluate_localization)

    s = sub.add_parser("info", help="load X-ray files (PNG/JPEG/DICOM/NIfTI/NRRD) and print their metadata")
    s.add_argument("paths", nargs="+")
    s.add_argument("--voi-lut", action="store_true", help="apply the DICOM VOI LUT / window")
    s.add_argument("--window", nargs=2, type=float, metavar=("CENTER", "WIDTH"), help="linear window to [0, 1]")
    s.set_defaults(func=_cmd_info)

    from gazerad.serving.launch import add_parser as _add_serve

    _add_serve(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (GazeRadError, FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"gazerad {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
