"""Why a gaze method wins or loses: the relation as a class signal, the crop's lesion-keeping rate, paired statistics.

- :func:`relation_class_signal`: of the image pairs a relation calls positive (above a
  threshold), the share that share a finding, against the base rate of all pairs.
- :func:`lesion_keep_rate`: how often a random resized crop (with or without predicted
  attention) keeps a finding's centre inside the view.
- :func:`paired_summary`: mean, std and the paired difference to a baseline with a 95 %
  Student-t confidence interval over seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["relation_class_signal", "lesion_keep_rate", "paired_summary"]


def relation_class_signal(matrix: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """``matrix`` ``(N, N)`` relation over images with ``labels`` ``(N, C)`` 0/1 findings.

    Returns ``{"positive_pairs", "share_same_finding", "base_rate", "lift"}``: the fraction
    of the ``N (N - 1) / 2`` pairs with relation ``> threshold``, the share of those that
    share at least one finding, the same share over all pairs, and their ratio (1 = no signal).
    """
    m = np.asarray(matrix, dtype=np.float64)
    y = np.asarray(labels) > 0
    if m.shape != (len(y), len(y)):
        raise ValueError(f"relation is {m.shape}, labels are for {len(y)} images")
    iu = np.triu_indices(len(y), 1)
    same = (y.astype(np.int64) @ y.T.astype(np.int64) > 0)[iu]
    pos = m[iu] > threshold
    base = float(same.mean()) if same.size else float("nan")
    share = float(same[pos].mean()) if pos.any() else float("nan")
    return {
        "positive_pairs": float(pos.mean()) if pos.size else float("nan"),
        "share_same_finding": share,
        "base_rate": base,
        "lift": share / base if base > 0 else float("nan"),
    }


def lesion_keep_rate(
    crop: Any, shape: tuple[int, int], boxes: Sequence[Sequence[float]], attention: Sequence[np.ndarray | None], draws: int = 20, seed: int = 0
) -> float:
    """Share of ``draws`` crop boxes per image whose box holds the finding's centre.

    Args:
        crop: an :class:`gazerad.attention.AttentionRandResizedCrop` (``q`` decides how much
            attention a box keeps; without attention it is the plain crop).
        shape: ``(H, W)`` of the images the boxes and attention maps are given at.
        boxes: one finding box ``(x, y, w, h)`` per image, in ``shape``'s pixels.
        attention: per image an ``(h, w)`` attention map or ``None`` (plain crop).
    """
    kept, total = 0, 0
    crop.set_random_state(seed)
    for box, att in zip(boxes, attention):
        cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        for _ in range(draws):
            crop.randomize((shape, att))
            x0, y0, w, h = crop.last_box
            kept += int(x0 <= cx < x0 + w and y0 <= cy < y0 + h)
            total += 1
    return kept / total if total else float("nan")


def paired_summary(values: Mapping[int, float], baseline: Mapping[int, float] | None = None) -> dict[str, Any]:
    """``{seed: metric}`` -> ``{"mean", "std", "seeds", "diff_vs_plain", "ci_low", "ci_high"}``.

    ``std`` is the sample standard deviation (ddof 1). With ``baseline`` (the same seeds'
    metric of the baseline) the paired differences give the mean difference and its 95 %
    Student-t interval; seeds missing from either side are left out of the pairing.
    """
    from scipy import stats

    seeds = sorted(values)
    v = np.array([values[s] for s in seeds], dtype=np.float64)
    out: dict[str, Any] = {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
        "seeds": seeds,
        "diff_vs_plain": None,
        "ci_low": None,
        "ci_high": None,
    }
    if baseline is not None:
        common = [s for s in seeds if s in baseline]
        d = np.array([values[s] - baseline[s] for s in common], dtype=np.float64)
        if len(d):
            out["diff_vs_plain"] = float(d.mean())
        if len(d) > 1:
            half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
            out["ci_low"], out["ci_high"] = float(d.mean() - half), float(d.mean() + half)
    return out
