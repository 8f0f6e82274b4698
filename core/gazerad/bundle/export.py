"""Trained GazeRad models as MONAI bundles: ``gazerad export-bundle --model RUN_OR_PT --out DIR``.

A bundle (``monai.bundle``'s layout) holds:

* ``configs/metadata.json``: version, changelog, ``monai_version``, ``pytorch_version``,
  ``numpy_version``, ``network_data_format`` (inputs / outputs: type, channels, spatial
  shape, dtype, value range), the model card, and ``gazerad`` (the model kind);
* ``configs/inference.json``: GazeRad's X-ray loader (PNG, JPEG, DICOM, ...), the model's
  own preprocessing, the network (``network_def``), a MONAI ``SupervisedEvaluator`` with
  MONAI's ``CheckpointLoader``, the postprocessing (attention map at the image's size /
  calibrated class probabilities and Grad-CAM boxes / encoder features) and a writer
  (:mod:`gazerad.bundle.transforms`); ``input_dir`` and ``output_dir`` are its inputs;
* ``models/model.pt``: the GazeRad model file itself (weights as float32 plus what the
  model needs: classes, calibration, box settings, ...). MONAI's ``CheckpointLoader``
  loads the network's weights from it (they sit under one key); every GazeRad loader
  (:func:`gazerad.engine.checkpoint.load_model_file`) takes the bundle folder itself;
* ``docs/README.md`` (model card: synthetic training data, held-out metrics, not for
  clinical use) and ``LICENSE`` (Apache-2.0, GazeRad's licence).

Kinds: ``attention`` (FocusContrast's predictor), ``kacl`` (KACL localiser or supervised
classifier: the server's ``localization`` and ``classification``) and ``encoder``
(pre-trained backbone).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from gazerad.engine.checkpoint import load_failure
from gazerad.errors import InputError

__all__ = ["KINDS", "export_bundle", "bundle_model_file", "is_bundle"]

KINDS = ("attention", "kacl", "encoder")
_WEIGHTS_KEY = {"attention": "state_dict", "kacl": "model", "encoder": "backbone"}
_LICENSE = """Copyright the GazeRad authors

Licensed under the Apache License, Version 2.0 (the "License"); you may not use these files
except in compliance with the License. You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software distributed under the
License is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND,
either express or implied. See the License for the specific language governing permissions
and limitations under the License.
"""


def is_bundle(path: str | os.PathLike) -> bool:
    """``True`` for a folder with ``configs/metadata.json`` and ``models/model.pt``."""
    p = Path(path)
    return (p / "configs" / "metadata.json").is_file() and (p / "models" / "model.pt").is_file()


def bundle_model_file(path: str | os.PathLike) -> Path:
    """``BUNDLE/models/model.pt`` of a bundle folder, ``path`` itself otherwise."""
    p = Path(path)
    return p / "models" / "model.pt" if is_bundle(p) else p


def _source(model: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    p = Path(model)
    if p.is_dir():
        if is_bundle(p):
            p = bundle_model_file(p)
        else:
            found = [p / f"{k}.pt" for k in KINDS if (p / f"{k}.pt").is_file()]
            if not found:
                raise InputError(p, f"no model file in this run folder (looked for {', '.join(f'{k}.pt' for k in KINDS)})")
            p = found[0]
    if not p.is_file():
        raise InputError(p, "model file does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise InputError(p, f"cannot be read as a GazeRad model ({load_failure(exc)})") from None
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind not in KINDS:
        raise InputError(p, f"not an exportable GazeRad model (kind {kind!r}; exportable: {', '.join(KINDS)})")
    missing = [k for k in ("config", _WEIGHTS_KEY[kind], *(("classes", "feature_names") if kind == "kacl" else ())) if k not in state]
    if missing:
        raise InputError(p, f"not a finished model file (no {', '.join(missing)}; a training checkpoint?): export the run folder or its {kind}.pt")
    return p, state


def _float32(state: dict[str, Any], kind: str) -> dict[str, Any]:
    key = _WEIGHTS_KEY[kind]
    state[key] = {k: v.float() if v.is_floating_point() else v for k, v in state[key].items()}
    return state


def _network_def(kind: str, state: dict[str, Any]) -> tuple[dict[str, Any], int, int, int]:
    """``(network_def, input side, output channels, feature size)``."""
    c = state["config"]
    if kind == "attention":
        return {"_target_": "gazerad.attention.network.AttentionPredictor", **c}, int(c["input_size"]), 1, 0
    if kind == "kacl":
        net = {
            "_target_": "gazerad.kacl.model.KACLModel",
            "n_classes": len(state["classes"]),
            "n_features": len(state["feature_names"]),
            "backbone": c["backbone"],
            "proj_dim": c["proj_dim"],
            "dropout": c["dropout"],
            "cam_layer": c.get("cam_layer"),
        }
        return net, int(c["image_size"]), len(state["classes"]), 0
    from gazerad.ssl import build_backbone

    _, fdim = build_backbone(c["backbone"])
    return {"_target_": "gazerad.ssl.backbones.backbone_module", "name": c["backbone"]}, int(c["image_size"]), int(fdim), int(fdim)


def _metadata(kind: str, state: dict[str, Any], side: int, channels: int, card: dict[str, Any]) -> dict[str, Any]:
    import monai
    import numpy

    import gazerad

    image = {
        "type": "image",
        "format": "magnitude",
        "modality": "xray",
        "num_channels": 1,
        "spatial_shape": [side, side],
        "dtype": "float32",
        "value_range": [0, 1],
        "is_patch_data": False,
        "channel_def": {"0": "image"},
    }
    if kind == "attention":
        pred = {"type": "image", "format": "logits", "num_channels": 1, "spatial_shape": [side, side], "dtype": "float32", "value_range": [],
                "is_patch_data": False, "channel_def": {"0": "attention logits (softmax over pixels: the map)"}}  # fmt: skip
    elif kind == "kacl":
        pred = {"type": "probabilities", "format": "classes", "num_channels": channels, "spatial_shape": [], "dtype": "float32", "value_range": [],
                "is_patch_data": False, "channel_def": {str(i): c for i, c in enumerate(state["classes"])}}  # fmt: skip
    else:
        pred = {"type": "feature", "format": "embedding", "num_channels": channels, "spatial_shape": [], "dtype": "float32", "value_range": [],
                "is_patch_data": False, "channel_def": {}}  # fmt: skip
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by gazerad {gazerad.__version__}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"gazerad": gazerad.__version__},
        "name": f"GazeRad {card.get('task', kind)}",
        "task": card.get("task", kind),
        "description": card.get("task", kind),
        "authors": "GazeRad",
        "copyright": "Copyright the GazeRad authors",
        "intended_use": card.get("intended_use"),
        "data_source": (card.get("training_data") or {}).get("description", "see docs/README.md"),
        "data_type": "png, jpeg, dicom",
        "network_data_format": {"inputs": {"image": image}, "outputs": {"pred": pred}},
        "gazerad": {"kind": kind, "classes": list(state.get("classes", [])), "model_card": card},
    }


def _inference(kind: str, state: dict[str, Any], net: dict[str, Any], side: int) -> dict[str, Any]:
    from gazerad.kacl.calibration import temperature_of

    pre_kind = "attention" if kind == "attention" else "encoder"
    post: list[dict[str, Any]] = []
    if kind == "attention":
        post.append({"_target_": "gazerad.bundle.transforms.AttentionMapd", "keys": "pred", "shape_key": "image_shape"})
    elif kind == "kacl":
        from gazerad.kacl.evaluate import box_settings

        post.append({"_target_": "gazerad.bundle.transforms.ClassProbabilitiesd", "keys": "pred", "temperature": temperature_of(state)})
        post.append(
            {"_target_": "gazerad.bundle.transforms.CAMBoxesd", "keys": "image", "network": "@network", "classes": list(state["classes"]),
             "box_extraction": json.loads(json.dumps(box_settings(state), default=float)), "min_score": "@min_score"}
        )  # fmt: skip
    post.append(
        {"_target_": "gazerad.bundle.transforms.SaveOutputd", "keys": "pred", "output_dir": "@output_dir",
         "kind": "classifier" if kind == "kacl" else kind, "classes": list(state.get("classes", []))}
    )  # fmt: skip
    exts = "('.png', '.jpg', '.jpeg', '.dcm', '.nii', '.nii.gz', '.nrrd', '.mha', '.tif', '.tiff')"
    return {
        "imports": ["$import glob", "$import os", "$import gazerad.bundle.transforms"],
        "bundle_root": ".",
        "input_dir": "$@bundle_root + '/sample'",
        "output_dir": "$@bundle_root + '/eval'",
        "min_score": 0.5,
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": net,
        "network": "$@network_def.to(@device)",
        "datalist": f"$[{{'image': f, 'path': f}} for f in sorted(glob.glob(os.path.join(@input_dir, '*'))) if f.lower().endswith({exts})]",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "gazerad.io.xray.LoadXRayd", "keys": "image"},
                {"_target_": "gazerad.bundle.transforms.ModelInputd", "keys": "image", "size": side, "kind": pre_kind},
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False, "num_workers": 0},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": post},
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$@bundle_root + '/models/model.pt'",
                "load_dict": {_WEIGHTS_KEY[kind]: "@network"},
                "map_location": "@device",
            }
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
        },
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
    }


def _readme(kind: str, card: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [f"# {meta['name']}", "", f"**{card.get('intended_use')}**", "", f"Task: {card.get('task', kind)}.", ""]
    td = card.get("training_data") or {}
    lines += ["## Training data", "", td.get("description", "not recorded (trained outside the GazeRad server)"), ""]
    hm = card.get("heldout_metrics") or {}
    lines += ["## Held-out metrics", ""] + ([f"- {k}: {v}" for k, v in hm.items()] or ["not recorded"]) + [""]
    io_ = meta["network_data_format"]
    lines += [
        "## Use",
        "",
        "```bash",
        "python -m monai.bundle run --config_file configs/inference.json --bundle_root . --input_dir XRAYS --output_dir OUT",
        "```",
        "",
        f"Input: one X-ray per file (PNG, JPEG, DICOM, ...), preprocessed to {io_['inputs']['image']['spatial_shape']} in [0, 1].",
        "Output per image in OUT: "
        + (
            "`<id>_attention.npy` (the map at the image's size, summing to 1) and `<id>.json`."
            if kind == "attention"
            else "`<id>.json` (calibrated class probabilities, Grad-CAM boxes of classes >= min_score, image pixels)."
            if kind == "kacl"
            else "`<id>_features.npy` (the encoder's feature vector) and `<id>.json`."
        ),
        "",
        f"Exported by GazeRad {meta['required_packages_version']['gazerad']} (MONAI {meta['monai_version']}, PyTorch {meta['pytorch_version']}).",
    ]
    return "\n".join(lines) + "\n"


def export_bundle(model: str | os.PathLike, out: str | os.PathLike, stats: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Export a trained model (a model file, its run folder or a bundle) as a MONAI bundle at ``out``.

    Args:
        model: ``attention.pt`` / ``kacl.pt`` / ``encoder.pt``, a run folder holding one, or
            a served model file (``localization.pt``, ...).
        out: the bundle folder (new or empty, unless ``overwrite``).
        stats: the model's ``<name>.stats.json`` for the model card (default: next to a
            served model file, when present).

    Returns:
        ``out``. The bundle is written in a temporary folder and renamed into place.
    """
    from gazerad.io.atomic import atomic_write_text
    from gazerad.serving.model_card import model_card

    src, state = _source(model)
    kind = state["kind"]
    dest = Path(out)
    if dest.exists() and not dest.is_dir():
        raise InputError(dest, "exists and is a file: the bundle is a folder")
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise InputError(dest, "bundle folder exists and is not empty (pass overwrite=True / --overwrite)")
    if stats and not Path(stats).is_file():
        raise InputError(stats, "statistics file does not exist")
    stats_path = Path(stats) if stats else src.with_suffix(".stats.json")
    try:
        st = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(stats_path, f"statistics are not JSON ({exc})") from None
    if not isinstance(st, dict):
        raise InputError(stats_path, "statistics must be a JSON object")
    name = {"attention": "attention", "kacl": "localization" if state["config"].get("method", "kacl") == "kacl" else "classification"}.get(kind, "pretrain")
    card = model_card(name, st)
    net, side, channels, _ = _network_def(kind, state)
    meta = _metadata(kind, state, side, channels, card)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "configs").mkdir(parents=True)
    (tmp / "models").mkdir()
    (tmp / "docs").mkdir()
    torch.save(_float32(state, kind), tmp / "models" / "model.pt")
    atomic_write_text(tmp / "configs" / "metadata.json", json.dumps(meta, indent=1, default=str))
    atomic_write_text(tmp / "configs" / "inference.json", json.dumps(_inference(kind, state, net, side), indent=1))
    atomic_write_text(tmp / "docs" / "README.md", _readme(kind, card, meta))
    atomic_write_text(tmp / "LICENSE", _LICENSE)
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    return dest
