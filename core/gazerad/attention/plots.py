"""Pictures of an attention training run: the loss/metric curves and held-out overlays."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from gazerad.attention.data import AttentionDataset
from gazerad.attention.network import AttentionPredictor

__all__: list[str] = []  # used by training.py

PathLike = str | os.PathLike


def _plot_curve(history: list[dict[str, Any]], base: Mapping[str, Any], path: PathLike) -> None:
    from gazerad.engine.runlog import new_figure, save_figure

    ep = [h["epoch"] for h in history]
    fig = new_figure((9, 3.4), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    if history and "heldout_loss" in history[0]:
        ax1.plot(ep, [h["heldout_loss"] for h in history], "s-", label="held-out")
        if base.get("loss") is not None:
            ax1.axhline(base["loss"], color="grey", ls="--", label="centre prior (held-out)")
    ax1.set_xlabel("epoch")
    ax1.xaxis.get_major_locator().set_params(integer=True)
    ax1.set_ylabel("KL + (1 - CC)")
    ax1.legend(fontsize=8)
    for key, colour in (("cc", "C0"), ("auc_judd", "C1"), ("nss", "C2")):
        if history and key in history[0]:
            ax2.plot(ep, [h[key] for h in history], "o-", color=colour, label=key)
            if base.get(key) is not None:
                ax2.axhline(base[key], color=colour, ls="--", lw=1)
    ax2.set_xlabel("epoch")
    ax2.xaxis.get_major_locator().set_params(integer=True)
    ax2.set_title("held-out (dashed: centre prior)", fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_overlay(
    ds: AttentionDataset,
    maps: np.ndarray | None,
    prior: np.ndarray,
    model: AttentionPredictor,
    path: PathLike,
    n: int,
) -> None:
    """One PNG: per row an image with its readers' heatmap (and fixations), the prediction
    and the centre prior, each titled with its CC against the heatmap."""
    from matplotlib import colormaps

    from gazerad.engine.runlog import new_figure, save_figure
    from gazerad.gaze.metrics import cc

    n = max(1, min(n, len(ds)))
    if maps is None:
        with torch.no_grad():
            maps = model.eval().predict(ds.images[:n])[:, 0].numpy()
    s, gap = ds.input_size, 4
    jet = colormaps["jet"]
    mosaic = np.ones((n * s + (n - 1) * gap, 3 * s + 2 * gap, 3))
    fig_h = mosaic.shape[0] / 40 + 0.3
    fig = new_figure((mosaic.shape[1] / 40, fig_h), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1 - 0.3 / fig_h))
    ax.set_axis_off()
    for r in range(n):
        img = ds.images[r, 0].numpy()[..., None].repeat(3, -1)
        tgt = ds.targets[r, 0].numpy()
        for c, (name, m) in enumerate((("gaze", tgt), ("predicted", maps[r]), ("centre prior", prior))):
            heat = jet(m / max(float(m.max()), 1e-30))[..., :3]
            y0, x0 = r * (s + gap), c * (s + gap)
            mosaic[y0 : y0 + s, x0 : x0 + s] = 0.55 * img + 0.45 * heat
            label = ds.image_ids[r] if c == 0 else f"{name} CC {float(cc(m, tgt)):.2f}"
            ax.text(x0 + 2, y0 + 2, label, color="white", fontsize=7, va="top", bbox=dict(facecolor="black", alpha=0.5, pad=1, lw=0))
        f = ds.fixations[r]
        if len(f):
            ax.scatter(f[:, 0], f[:, 1] + r * (s + gap), s=5, facecolors="none", edgecolors="white", linewidths=0.5)
    ax.imshow(mosaic, extent=(0, mosaic.shape[1], mosaic.shape[0], 0), interpolation="nearest")
    ax.set_xlim(0, mosaic.shape[1])
    ax.set_ylim(mosaic.shape[0], 0)
    fig.text(0.5, 1 - 0.15 / fig_h, "held-out images: readers' gaze | predicted | centre prior", fontsize=8, ha="center", va="center")
    save_figure(fig, path)
