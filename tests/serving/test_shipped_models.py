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
from gazerad.kacl.evaluate import attention_fingerprint, box_settings, needs_attention, selection_score

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
    scores = {m: selection_score(v["auc"], v["t_iou_0.3"]) for m, v in sel["validation"].items()}
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


def test_readme_example_top_box_is_on_the_mass(tmp_path: Path) -> None:
    """The README's example study (``00000019_000`` of the seed-0 sample: a mass at x 149-186,
    y 314-351 and a nodule) with the shipped models, as the server answers it: no finding
    reaches 0.5 (an explicit answer, no boxes); exploring with ``top_k: 1`` the top box, ranked
    by expected hit (probability x validation hit rate), is the Mass box on the mass, where
    the most probable class (Nodule, 18 % validation hit rate) would put its box beside it."""
    from gazerad.data.nih import read_bbox_list
    from gazerad.localize.boxes import iou
    from gazerad.serving.infer import LocalizationService
    from gazerad.synth.study import generate_studies

    generate_studies(tmp_path / "s", n=20, seed=0, size=512, workers=1, progress=False)  # the sample's first 20 studies
    image = tmp_path / "s" / "images" / "00000019_000.png"
    mass = next(b for lab, b in read_bbox_list(tmp_path / "s" / "BBox_List_2017.csv")["00000019_000.png"] if lab == "Mass")
    assert mass == pytest.approx((149, 314, 37, 37))
    svc = LocalizationService(MODELS / "pretrained_localization.pt", "cpu", attention_path=MODELS / "pretrained_attention.pt")
    default = svc(image)
    assert default["boxes"] == [] and not default["finding"] and "no finding with probability >= 0.50" in default["message"]
    top = svc(image, top_k=1)["boxes"][0]
    assert top["label"] == "Mass" and iou((top["x"], top["y"], top["w"], top["h"]), mass) >= 0.3, top
    assert top["below_min_score"] and top["expected_hit"] == pytest.approx(top["probability"] * top["validation_t_iou_0.3"])
