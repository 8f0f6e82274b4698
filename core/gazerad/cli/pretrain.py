"""Pre-training: ``gazerad pretrain`` (SimCLR/MoCo/BYOL/SimSiam, +McGIP/GzPT, +FocusContrast) and ``evaluate``."""

from __future__ import annotations

import argparse
import json

from gazerad.cli._command import Command
from gazerad.cli._settings import add_settings, settings_from_args

__all__ = ["COMMANDS"]


def _add_pretrain(s: argparse.ArgumentParser) -> None:
    from gazerad.pretrain.config import PretrainConfig
    from gazerad.pretrain.frameworks import FRAMEWORKS

    add_settings(s, PretrainConfig, "pretrain", aliases={"data": ["--images"], "image_size": ["--size"]}, choices={"framework": tuple(FRAMEWORKS)})


def _pretrain(args: argparse.Namespace) -> int:
    from gazerad.pretrain.trainer import pretrain

    cfg = settings_from_args(args)
    res = pretrain(cfg)
    if "encoder" in res:  # rank 0
        last = res["history"][-1]["loss"] if res["history"] else float("nan")
        print(f"pretrain {cfg.framework} [{cfg.method}]: {res['steps']} steps in {res['seconds']:.1f} s, final loss {last:.4f} -> {res['encoder']}")
    return 0


def _add_evaluate(s: argparse.ArgumentParser) -> None:
    s.add_argument("--encoder", required=True, help="encoder.pt or run folder, or 'random' for an untrained backbone")
    s.add_argument("--data", required=True, help="study folder; train split trains, test+validate score")
    s.add_argument("--protocol", default="linear", choices=["linear", "knn", "finetune"], help="default linear")
    s.add_argument("--task", default="multilabel", choices=["multilabel", "multiclass", "ordinal"], help="default multilabel")
    s.add_argument("--backbone", default=None, help="with --encoder random")
    s.add_argument("--image-size", dest="image_size", type=int, default=None, help="input side in px (default: the encoder's)")
    s.add_argument("--size", dest="image_size", type=int, default=None, help=argparse.SUPPRESS)  # the old name
    s.add_argument("--epochs", type=int, default=10, help="fine-tune epochs (default 10)")
    s.add_argument("--seed", type=int, default=0, help="default 0")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present)")
    s.add_argument("--out", default=None, help="also write the metrics JSON here")


def _evaluate(args: argparse.Namespace) -> int:
    from gazerad.pretrain.evaluate import evaluate_encoder

    res = evaluate_encoder(
        None if args.encoder == "random" else args.encoder,
        args.data,
        protocol=args.protocol,
        task=args.task,
        backbone=args.backbone,
        image_size=args.image_size,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
    )
    if args.out:
        from gazerad.io.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps(res, indent=1))
    print(json.dumps(res))
    return 0


COMMANDS = (
    Command("pretrain", "contrastive pre-training: SimCLR/MoCo/BYOL/SimSiam, +McGIP/GzPT, +FocusContrast", _add_pretrain, _pretrain),
    Command("evaluate", "evaluate a pre-trained encoder: linear probe, k-NN or fine-tune", _add_evaluate, _evaluate),
)
