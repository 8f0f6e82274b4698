"""``gazerad train-attention``: the FocusContrast attention predictor on gaze heatmaps, with held-out metrics."""

from __future__ import annotations

import argparse
from typing import Any

from gazerad.cli._command import Command
from gazerad.cli._settings import add_settings, settings_from_args

__all__ = ["COMMANDS", "print_attention_report"]


def _add_train_attention(s: argparse.ArgumentParser) -> None:
    from gazerad.attention.config import AttentionConfig

    add_settings(s, AttentionConfig, "attention", aliases={"data": ["--studies", "--images"], "image_size": ["--size"]})


def print_attention_report(r: dict[str, Any]) -> None:
    """Print a :func:`~gazerad.attention.training.train_attention` result: the held-out
    metrics of the model next to the centre prior's, and the files written."""
    print(f"trained on {r['n_train']} images, {r['config']['epochs']} epochs, {r['seconds']:.1f} s")
    if r["n_heldout"]:

        def fmt(v: Any) -> str:
            return f"{v:9.3f}" if isinstance(v, (int, float)) else f"{'n/a':>9}"

        print(f"held-out ({r['n_heldout']} images)   {'CC':>9}{'KL':>9}{'NSS':>9}{'AUC-Judd':>9}")
        for name, m in (("attention model", r["heldout"]), ("centre prior", r["centre_prior"])):
            print(f"  {name:<22}{''.join(fmt(m.get(k)) for k in ('cc', 'kl', 'nss', 'auc_judd'))}")
    else:
        print("no held-out images with gaze: no metrics")
    print(f"wrote {', '.join(r['files'].values())}")


def _train_attention(args: argparse.Namespace) -> int:
    from gazerad.attention.training import train_attention

    print_attention_report(train_attention(settings_from_args(args)))
    return 0


COMMANDS = (
    Command("train-attention", "train the FocusContrast attention predictor on gaze heatmaps; print held-out metrics", _add_train_attention, _train_attention),
)
