"""Gaze: ``gazerad relation`` (gaze-similarity relation matrix, torchrun-aware) and ``relation-merge``."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from gazerad.cli._command import Command

__all__ = ["COMMANDS", "parse_params"]


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` items as a dict, each value read as JSON when it is (else kept as text)."""
    params: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--param expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            params[k] = json.loads(v)
        except json.JSONDecodeError:
            params[k] = v
    return params


def _add_relation(s: argparse.ArgumentParser) -> None:
    s.add_argument("--gaze", required=True, help="gaze data: REFLACX main_data folder, study folder, EGD-CXR/McGIP/generic file")
    s.add_argument("--scheme", default="tima", help="tima, moment, dhash, multimatch, cc, kl, dtw (default tima)")
    s.add_argument("--param", action="append", metavar="KEY=VALUE", help="scheme parameter (JSON value), repeatable")
    s.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help="rendering preset of moment, dhash and tima: 'mcgip' draws the maps as the McGIP authors' code does (default: ours)",
    )
    s.add_argument("--out", required=True, help="output .npz")
    s.add_argument(
        "--images",
        default=None,
        help="rows: a labels CSV's 'Image Index' order, or a data folder (study, NIH, MIMIC-CXR root): its images that have gaze (default: gaze order)",
    )
    s.add_argument("--aggregate", default="mean", choices=["mean", "max"], help="over reader pairs (default mean)")
    s.add_argument("--top-k", type=int, default=None, help="sparse output: keep the top K per row")
    s.add_argument("--threshold", type=float, default=None, help="sparse output: keep values >= T")
    s.add_argument("--block-size", type=int, default=256, help="images per block (default 256)")
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--shard", default=None, metavar="I/N", help="compute shard I of N (merge with relation-merge)")
    s.add_argument("--cache", default=None, metavar="DIR", help="cache results by content in DIR")
    s.add_argument("--quiet", action="store_true", help="no progress bar")


def _relation(args: argparse.Namespace) -> int:
    from gazerad.gaze.importers import load_gaze
    from gazerad.gaze.relation import compute_relation, compute_relation_distributed

    params = parse_params(args.param)
    if args.preset is not None:
        from gazerad.gaze.similarity_core import preset_options

        preset_options(args.scheme, args.preset)  # an unknown preset, or one without this scheme: ValueError before loading
        if params.get("preset", args.preset) != args.preset:
            raise ValueError(f"--preset {args.preset} and --param preset={params['preset']} disagree")
        params["preset"] = args.preset
    gaze = load_gaze(args.gaze)
    if len(gaze) == 0:
        raise ValueError(f"{args.gaze}: no usable gaze records")
    image_ids = None
    if args.images and os.path.isdir(args.images):
        from gazerad.data.layouts import open_study_folder
        from gazerad.data.study import image_id_of

        have = {image_id_of(i): i for i in gaze.images}
        image_ids = [have[image_id_of(n)] for n in open_study_folder(args.images).table.names if image_id_of(n) in have]
        if not image_ids:
            raise ValueError(f"{args.images}: none of its images has gaze in {args.gaze}")
    elif args.images:
        from gazerad.data import read_labels

        image_ids = list(read_labels(args.images))
    kw: dict[str, Any] = dict(
        gaze=gaze,
        scheme=args.scheme,
        image_ids=image_ids,
        aggregate=args.aggregate,
        top_k=args.top_k,
        threshold=args.threshold,
        block_size=args.block_size,
        workers=args.workers,
        cache_dir=args.cache,
        progress=not args.quiet,
        **params,
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


def _add_relation_merge(s: argparse.ArgumentParser) -> None:
    s.add_argument("parts", nargs="+", metavar="PART", help="shard .npz files written with 'gazerad relation --shard'")
    s.add_argument("--out", required=True, help="output .npz")


def _relation_merge(args: argparse.Namespace) -> int:
    from gazerad.gaze.relation import merge_relations

    rel = merge_relations(args.parts)
    rel.save(args.out)
    print(f"merged {len(args.parts)} shards -> {args.out} ({len(rel.image_ids)} images)")
    return 0


COMMANDS = (
    Command("relation", "gaze-similarity relation matrix over images (McGIP/GzPT); torchrun-aware", _add_relation, _relation),
    Command("relation-merge", "merge relation shards written with --shard", _add_relation_merge, _relation_merge),
)
