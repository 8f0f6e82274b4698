"""Calibrated class probabilities: temperature scaling fitted on a validation split.

A multi-label classifier's sigmoid outputs are scores, not probabilities: a network trained
to low BCE on a small set is over-confident on new images. Temperature scaling (Guo et al.,
2017) divides every logit by one scalar ``T`` fitted by maximum likelihood on held-out
(validation) images; the ranking of images per class, hence the AUC, is unchanged. One
shared ``T`` rather than one per class: a validation split of a few dozen images holds too
few positives per finding to fit five.

- :func:`fit_temperature`: ``(N, C)`` logits and 0/1 labels -> ``T``;
- :func:`calibrated_probabilities`: logits and ``T`` -> probabilities;
- :func:`expected_calibration_error` and :func:`reliability_bins`: how far predicted
  probabilities are from observed frequencies (all ``N x C`` (image, finding) pairs pooled).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["fit_temperature", "binary_nll", "temperature_of", "calibrated_probabilities", "expected_calibration_error", "reliability_bins", "TEMPERATURE_RANGE"]

TEMPERATURE_RANGE = (0.05, 20.0)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if z.shape != y.shape or z.size == 0:
        raise ValueError(f"logits {z.shape} and labels {y.shape} must have the same, non-empty shape")
    if not np.isfinite(z).all():
        raise ValueError("logits hold NaN or infinite values")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    return z.ravel(), y.ravel()


def binary_nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean BCE of ``sigmoid(logits / temperature)`` against 0/1 ``labels`` (same shape)."""
    z, y = _check(logits, labels)
    return _nll(z, y, temperature)


def _nll(z: np.ndarray, y: np.ndarray, t: float) -> float:
    s = z / t
    # BCE with logits, stable: max(s, 0) - s * y + log(1 + exp(-|s|))
    return float(np.mean(np.maximum(s, 0.0) - s * y + np.log1p(np.exp(-np.abs(s)))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the BCE of ``sigmoid(logits / T)`` against ``labels``.

    Args:
        logits: ``(N, C)`` (or any shape) raw classifier outputs.
        labels: the same shape, 0/1.

    Returns:
        ``T`` in :data:`TEMPERATURE_RANGE` (``T > 1``: the model was over-confident).
    """
    from scipy.optimize import minimize_scalar

    z, y = _check(logits, labels)
    lo, hi = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    res = minimize_scalar(lambda u: _nll(z, y, float(np.exp(u))), bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def calibrated_probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``sigmoid(logits / temperature)``, any shape."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return _sigmoid(np.asarray(logits, dtype=np.float64) / float(temperature))


def temperature_of(state: dict[str, Any]) -> float:
    """The temperature a saved classifier (``kacl.pt`` state) was calibrated with (1: none)."""
    return float((state.get("calibration") or {}).get("temperature", 1.0))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Equal-width probability bins: ``[{"lo", "hi", "n", "mean_probability", "positive_rate"}]``
    (empty bins left out); all (image, finding) pairs pooled."""
    p, y = np.asarray(probs, dtype=np.float64).ravel(), np.asarray(labels, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"probabilities {p.shape} and labels {y.shape} differ in size")
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            mean_p, rate = float(p[m].mean()), float(y[m].mean())
            out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()), "mean_probability": mean_p, "positive_rate": rate})
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE: the pair-weighted mean of ``|positive rate - mean probability|`` over :func:`reliability_bins`."""
    rows = reliability_bins(probs, labels, bins)
    n = sum(r["n"] for r in rows)
    return float(sum(r["n"] * abs(r["positive_rate"] - r["mean_probability"]) for r in rows) / max(n, 1))
