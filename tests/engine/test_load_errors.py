"""A file that is not a GazeRad model is refused in one line naming it, never with torch's
advice to load it with ``weights_only=False`` (which would run code from the file)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gazerad.attention.checkpoint import load_attention_model
from gazerad.errors import InputError


class Payload:
    """Any class: loading it back needs unpickling, which GazeRad never does."""


def test_pickled_objects_and_garbage_are_refused_without_unsafe_advice(tmp_path: Path) -> None:
    torch.save({"state": Payload()}, tmp_path / "pickled.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a model")
    for name, words in (("pickled.pt", "not a tensor-only file"), ("garbage.pt", "cannot be read as a GazeRad attention model")):
        with pytest.raises(InputError) as e:
            load_attention_model(tmp_path / name)
        text = str(e.value)
        assert name in text and words in text and "weights_only" not in text and "\n" not in text, text
