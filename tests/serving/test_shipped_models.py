"""The shipped first models (``monailabel_app/model/pretrained_*.pt``, rebuilt by
``scripts/make_weights.py``): small enough to ship, and the localiser's gaze box settings
tied to the attention model shipped beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gazerad.attention.checkpoint import load_attention_model
from gazerad.kacl import load_kacl
from gazerad.kacl.evaluate import attention_fingerprint, box_settings, needs_attention

MODELS = Path(__file__).resolve().parents[2] / "monailabel_app" / "model"


def test_shipped_weights_fit_the_budget() -> None:
    shipped = sorted(MODELS.glob("pretrained_*.pt"))
    assert {p.name for p in shipped} >= {"pretrained_attention.pt", "pretrained_localization.pt"}
    assert sum(p.stat().st_size for p in shipped) <= 20e6
    for p in shipped:
        assert p.with_suffix(".stats.json").is_file(), f"{p.name} has no model card statistics"


def test_shipped_localiser_is_the_validation_choice() -> None:
    """make_weights trains each localiser method alike and ships the best on validation."""
    stats = json.loads((MODELS / "pretrained_localization.stats.json").read_text())
    sel = stats["selection"]
    scores = {m: v["auc"] + v["t_iou_0.3"] for m, v in sel["validation"].items()}
    assert set(scores) == {"kacl", "supervised"} and sel["chosen"] == max(scores, key=scores.get)
    assert stats["params"]["method"] == sel["chosen"]
    _, state = load_kacl(MODELS / "pretrained_localization.pt")
    assert state["config"]["method"] == sel["chosen"]


@pytest.mark.parametrize("served", ["shipped", "other"])
def test_shipped_localiser_uses_gaze_only_beside_its_attention_model(served: str, tmp_path: Path) -> None:
    _, state = load_kacl(MODELS / "pretrained_localization.pt")
    tuned = state["box_extraction"]
    assert needs_attention(tuned) and not needs_attention(tuned["cam_only"])
    attention = load_attention_model(MODELS / "pretrained_attention.pt")
    if served == "other":  # e.g. retrained by POST /train/attention: different weights
        with torch.no_grad():
            next(attention.parameters()).add_(1e-3)
    fp = attention_fingerprint(attention)
    assert (fp == tuned["attention_fingerprint"]) == (served == "shipped")
    assert needs_attention(box_settings(state, fp)) == (served == "shipped")
