"""The local datastore, plus X-ray DICOM files and gaze recordings stored as labels.

Gaze is uploaded through MONAI Label's own label API with the tag ``gaze``::

    PUT /datastore/label?image=<id>&tag=gaze     (multipart field "label": the gaze file;
                                                  optional form field "params": {"reader": ..,
                                                  "pixels_per_degree": .., "replace": true})

The file is parsed strictly (any format of :mod:`gazerad.gaze.store`); a bad file is
answered with 422 and nothing is stored; a good one is written atomically as canonical
JSON to ``labels/gaze/<id>.json`` (appended to earlier readings unless ``replace``) and
shows up in ``GET /datastore/image/info?image=<id>`` under ``gaze``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict

from fastapi import HTTPException
from filelock import FileLock
from monailabel.datastore.local import DataModel, LocalDatastore

from gazerad.errors import InputError
from gazerad.gaze.store import GazeStore, parse_gaze_upload
from gazerad.serving.data import GAZE_TAG, is_safe_id

logger = logging.getLogger(__name__)

EXTENSIONS = ["*.png", "*.jpg", "*.jpeg", "*.dcm", "*.nii.gz", "*.nii", "*.nrrd"]


class GazeRadDatastore(LocalDatastore):
    """:class:`LocalDatastore` for 2-D X-rays (``.dcm`` included) with gaze labels."""

    def __init__(self, datastore_path: str, **kwargs: Any) -> None:
        kwargs.setdefault("extensions", EXTENSIONS)
        super().__init__(datastore_path, **kwargs)

    @property
    def gaze(self) -> GazeStore:
        return GazeStore(self._datastore.label_path(GAZE_TAG))

    def _known(self, image_id: str) -> Any:
        if not is_safe_id(image_id):
            raise HTTPException(status_code=400, detail=f"invalid image id {image_id!r} (ids are file names without a path)")
        obj = self._datastore.objects.get(image_id)
        if obj is None:
            raise HTTPException(status_code=404, detail=f"unknown image id {image_id!r}: no such image in the datastore")
        return obj

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        if label_tag != GAZE_TAG:
            self._known(image_id)
            return super().save_label(image_id, label_filename, label_tag, label_info)
        obj = self._known(image_id)
        info = dict(label_info or {})
        from gazerad.serving.infer import load_input

        try:
            img, _ = load_input(self.get_image_uri(image_id))
            records = parse_gaze_upload(label_filename, image_id, img.shape, reader_id=info.get("reader"),
                                        pixels_per_degree=info.get("pixels_per_degree"))
        except InputError as exc:
            # the upload is a temp file: name the image and the problem, not the temp path
            problem = exc.problem + (f" (row {exc.row})" if exc.row is not None else "")
            raise HTTPException(status_code=422, detail=f"gaze for image {image_id!r} rejected: {problem}") from None
        with FileLock(self._lock_file):
            self.gaze.put(image_id, records, replace=bool(info.get("replace", False)))
            summary = {**self.gaze.summary(image_id), "ts": int(time.time()), "name": f"{image_id}.json"}
            obj.labels[GAZE_TAG] = DataModel(info=summary, ext=".json")
            self._update_datastore_file(lock=False)
        logger.info(f"Stored gaze for {image_id}: {summary}")
        return image_id

    def remove_label(self, label_id: str, label_tag: str) -> None:
        if label_tag != GAZE_TAG:
            return super().remove_label(label_id, label_tag)
        obj = self._known(label_id)
        with FileLock(self._lock_file):
            self.gaze.remove(label_id)
            obj.labels.pop(GAZE_TAG, None)
            self._update_datastore_file(lock=False)

    def has_gaze(self, image_id: str) -> bool:
        return is_safe_id(image_id) and self.gaze.has(image_id)

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        info = super().get_image_info(image_id)
        if info and is_safe_id(image_id) and self.gaze.has(image_id):
            info["gaze"] = self.gaze.summary(image_id)
        return info

    def update_image_infos(self, infos: Dict[str, Dict[str, Any]]) -> None:
        """Update many images' info with one write of the datastore file."""
        with FileLock(self._lock_file):
            for image_id, info in infos.items():
                obj = self._datastore.objects.get(image_id)
                if obj is not None:
                    obj.image.info.update(info)
            self._update_datastore_file(lock=False)
