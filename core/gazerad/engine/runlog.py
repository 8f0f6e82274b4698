"""What a run leaves for people to look at: figures saved without touching matplotlib's
global state (no ``matplotlib.use``, no pyplot: a library must not switch its caller's
backend), and the loss curve every trainer writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from gazerad.io.atomic import atomic_path

__all__ = ["new_figure", "save_figure", "save_loss_curve"]


def new_figure(figsize: tuple[float, float], dpi: int = 110) -> Any:
    """A ``matplotlib.figure.Figure`` with an Agg canvas (headless, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def save_loss_curve(history: Sequence[dict[str, float]], path: str | os.PathLike, title: str, key: str = "loss") -> Path:
    """``loss.png``: ``history[i][key]`` per epoch."""
    fig = new_figure((5, 3.2), dpi=120)
    ax = fig.add_subplot()
    ax.plot([h["epoch"] for h in history], [h[key] for h in history], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"training {key}")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
