"""MONAI dictionary transform adding predicted attention maps to a sample."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from gazerad.attention.cache import AttentionCache

__all__ = ["PredictAttentiond"]


class PredictAttentiond:
    """Dictionary transform adding the predicted attention of ``keys``'s image.

    Stores a ``(1, H, W)`` float32 map (sum 1) under ``attention_key``, from an
    :class:`AttentionCache`, ready for
    :class:`~gazerad.attention.crop.AttentionRandResizedCropd`.

    Args:
        keys: key of the ``(1, H, W)`` image (one key).
        cache: the :class:`AttentionCache`.
        id_key: key of the image id; ``None``: the image's ``filename_or_obj`` metadata (a
            ``MetaTensor`` from :class:`~gazerad.io.xray.LoadXRayd`).
        attention_key: output key.
    """

    def __init__(self, keys: Hashable, cache: AttentionCache, id_key: Hashable | None = None, attention_key: Hashable = "attention") -> None:
        if isinstance(keys, (list, tuple)):
            if len(keys) != 1:
                raise ValueError("PredictAttentiond takes one image key")
            keys = keys[0]
        self.key = keys
        self.cache = cache
        self.id_key = id_key
        self.attention_key = attention_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        img = d[self.key]
        if self.id_key is not None:
            image_id = d[self.id_key]
        else:
            meta = getattr(img, "meta", None) or {}
            image_id = meta.get("filename_or_obj")
            if image_id is None:
                raise KeyError(f"no image id: pass id_key, or give {self.key!r} as a MetaTensor with filename_or_obj")
        d[self.attention_key] = self.cache.get(image_id, img)[None]
        return d
