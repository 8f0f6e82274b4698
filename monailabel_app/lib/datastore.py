"""The local datastore, made safe to expose: X-rays (``.dcm`` included) and gaze recordings.

Everything MONAI Label's :class:`LocalDatastore` does with a name from a request is
overridden here so that:

- every image id and label tag goes through :func:`gazerad.io.confine.confine` (a plain
  name; the final path stays inside the datastore / its tag folder): 400 otherwise, and
  nothing is touched;
- an uploaded image's type comes from its content (PNG, JPEG, DICOM, NIfTI, NRRD), it is
  decoded by GazeRad's loader in a temp file inside the datastore and only then renamed
  in; a label (any tag but ``gaze``) likewise, and it must have its image's size;
- ``datastore_v2.json`` is written atomically (temp + rename), and a corrupt one found at
  start is set aside and rebuilt from the files instead of stopping the server;
- the index is changed under one lock, so the file watcher's rescans and requests no
  longer race ("dictionary changed size during iteration" killed the watcher thread).

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

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator

from fastapi import HTTPException
from filelock import FileLock
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore
from monailabel.utils.others.generic import remove_file

from gazerad.data import image_id_of, image_suffix, image_suffixes
from gazerad.errors import InputError
from gazerad.gaze.store import GazeStore, parse_gaze_upload
from gazerad.io.atomic import atomic_path
from gazerad.io.confine import UnsafeName, check_name, confine, is_safe_name, sniff_image_suffix
from gazerad.io.scratch import ScratchFolder
from gazerad.serving.data import GAZE_TAG
from gazerad.serving.params import UploadParams

logger = logging.getLogger(__name__)

# the image files the datastore lists: GazeRad's readable suffixes, less the detached NRRD header
# (.nhdr names a data file beside it, which would be listed on its own)
EXTENSIONS = [f"*{s}" for s in image_suffixes() if s != ".nhdr"]
INCOMING = ".incoming"  # per-process folders of uploads being validated (not images: the scan skips folders)
MB = 2**20


def _bad_name(exc: UnsafeName) -> HTTPException:
    return HTTPException(status_code=400, detail=str(exc))


class GazeRadDatastore(LocalDatastore):
    """:class:`LocalDatastore` for 2-D X-rays with gaze labels, confined and validated.

    Args:
        datastore_path: the folder.
        max_image_mb: largest image or label upload.
        max_gaze_mb: largest gaze upload.
        kwargs: :class:`LocalDatastore`'s (``auto_reload``, ``read_only``, ...).
    """

    def __init__(self, datastore_path: str, max_image_mb: float = 128, max_gaze_mb: float = 32, **kwargs: Any) -> None:
        kwargs.setdefault("extensions", EXTENSIONS)
        self._mutex = threading.RLock()
        self.max_image_bytes = int(max_image_mb * MB)
        self.max_gaze_bytes = int(max_gaze_mb * MB)
        super().__init__(datastore_path, **kwargs)
        self.incoming = ScratchFolder(Path(self._datastore.image_path()) / INCOMING, "p-")
        if getattr(self, "_handler", None) is not None:
            # the index is now replaced by a rename (atomic): the watcher sees a move, not a
            # modification, when another process (training, scoring) writes it
            self._handler.on_moved = self._on_moved_event

    def _on_moved_event(self, event: Any) -> None:
        if os.path.realpath(getattr(event, "dest_path", "")) == os.path.realpath(self._datastore_config_path):
            self._init_from_datastore_file()
        else:
            self._on_any_event(event)

    # ------------------------------------------------------------------ index safety
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The process lock (threads: requests and the file watcher) and the file lock (processes)."""
        with self._mutex, FileLock(self._lock_file):
            yield

    def _update_datastore_file(self, lock: bool = True) -> None:
        def write() -> None:
            self._ignore_event_config = True
            text = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            with atomic_path(self._datastore_config_path, suffix=".tmp") as tmp:
                with open(tmp, "w") as fh:
                    fh.write(text)
                    fh.flush()
                    os.fsync(fh.fileno())
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        with self._mutex:
            if lock:
                with FileLock(self._lock_file):
                    write()
            else:
                write()

    def _init_from_datastore_file(self, throw_exception: bool = False) -> None:
        with self._mutex:
            try:
                super()._init_from_datastore_file(throw_exception=True)
            except ValueError as exc:
                # only a file written by something else can be corrupt (ours are atomic): keep it
                # for inspection and rebuild the index from the files on disk
                aside = f"{self._datastore_config_path}.corrupt-{int(time.time())}"
                with contextlib.suppress(OSError):
                    os.replace(self._datastore_config_path, aside)
                logger.error(f"datastore index was unreadable ({str(exc)[:200]}); moved to {aside} and rebuilt from the files")
                self._config_ts = 0

    def _reconcile_datastore(self) -> None:
        with self._mutex:
            super()._reconcile_datastore()

    def _list_files(self, path: str, patterns: Any) -> Dict[str, str]:
        # files whose id the confinement rule refuses could never be asked for: leave them out
        out = {}
        for name, f in super()._list_files(path, patterns).items():
            if is_safe_name(image_id_of(name)) and os.path.isfile(os.path.join(path, f)):
                out[name] = f
            else:
                logger.debug(f"datastore: skipping {name!r} (not a plain file with a valid id)")
        return out

    # ------------------------------------------------------------------ names
    def _known(self, image_id: str) -> Any:
        try:
            check_name(image_id, "image id")
        except UnsafeName as exc:
            raise _bad_name(exc) from None
        obj = self._datastore.objects.get(image_id)
        if obj is None:
            raise HTTPException(status_code=404, detail=f"unknown image id {image_id!r}: no such image in the datastore")
        return obj

    def _refuse_linked(self, image_id: str, obj: Any, what: str) -> None:
        """A 409 when ``image_id`` is a link into a data set served in place (``gazerad serve
        --studies NIH_ROOT``: :func:`gazerad.data.layouts.link_study_folder`): those images
        are read-only through the server."""
        if obj is not None and os.path.islink(os.path.join(self._datastore.image_path(), image_id + obj.image.ext)):
            raise HTTPException(
                status_code=409, detail=f"image {image_id!r} belongs to a data set served in place (read-only): it cannot be {what}; use another id"
            )

    def _tag_dir(self, tag: str) -> Path:
        try:
            return confine(self._datastore.label_path(None), tag, "label tag")
        except UnsafeName as exc:
            raise _bad_name(exc) from None

    @property
    def gaze(self) -> GazeStore:
        return GazeStore(self._tag_dir(GAZE_TAG))

    def _incoming(self, upload: str, limit: int, what: str) -> Path:
        """Copy an upload into the datastore's temp folder (same file system: the final rename
        is atomic), after its size check."""
        size = os.path.getsize(upload)
        if size == 0:
            raise HTTPException(status_code=422, detail=f"{what} upload is empty")
        if size > limit:
            raise HTTPException(status_code=413, detail=f"{what} upload of {size / MB:.1f} MB is over the limit of {limit / MB:.0f} MB")
        fd, tmp = tempfile.mkstemp(dir=self.incoming.path(), prefix="up-")
        os.close(fd)
        shutil.copyfile(upload, tmp)
        return Path(tmp)

    def _validated_image(self, upload: str, what: str, shape: tuple[int, int] | None = None) -> Path:
        """The upload as a temp file with the suffix its content calls for, decoded once by
        GazeRad's loader; 415/422 (nothing kept) when it is not a readable X-ray."""
        from gazerad.serving.infer import load_input

        tmp = self._incoming(upload, self.max_image_bytes, what)
        try:
            suffix = sniff_image_suffix(tmp)
            if suffix is None:
                raise HTTPException(status_code=415, detail=f"{what} is not a PNG, JPEG, DICOM, NIfTI or NRRD file (judged by its content)")
            typed = tmp.with_name(tmp.name + suffix)
            os.replace(tmp, typed)
            tmp = typed
            try:
                img, _ = load_input(tmp)
            except InputError as exc:  # the reader may quote the temp file: name the upload instead
                problem = exc.problem.replace(str(tmp), "the upload").replace(tmp.name, "the upload")
                raise HTTPException(status_code=422, detail=f"{what} cannot be read: {problem}") from None
            if shape is not None and tuple(img.shape) != tuple(shape):
                raise HTTPException(status_code=422, detail=f"{what} is {img.shape[1]} x {img.shape[0]}, but its image is {shape[1]} x {shape[0]} (W x H)")
            return tmp
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _suffix_of(self, path: Path) -> str:
        return image_suffix(path.name) or path.suffix.lower()

    # ------------------------------------------------------------------ images
    def get_image_uri(self, image_id: str) -> str:
        return super().get_image_uri(image_id) if is_safe_name(image_id) else ""

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        if not is_safe_name(image_id):
            return {}
        info = super().get_image_info(image_id)
        info.pop("path", None)  # no absolute server paths to clients
        if info and self.gaze.has(image_id):
            info["gaze"] = self.gaze.summary(image_id)
        return info

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        try:
            check_name(image_id, "image id")
        except UnsafeName as exc:
            raise _bad_name(exc) from None
        tmp = self._validated_image(image_filename, f"image {image_id!r}")
        try:
            ext = self._suffix_of(tmp)
            with self._locked():
                old = self._datastore.objects.get(image_id)
                self._refuse_linked(image_id, old, "replaced")
                dest = confine(self._datastore.image_path(), image_id, "image id", ext)
                os.replace(tmp, dest)
                if old is not None and old.image.ext != ext:  # the same id under another type: one image per id
                    remove_file(os.path.join(self._datastore.image_path(), image_id + old.image.ext))
                info = {k: v for k, v in dict(image_info or {}).items() if k not in ("ts", "name", "path")}
                info.update(ts=int(time.time()), name=dest.name)
                labels = old.labels if old is not None else {}
                self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext), labels=labels)
                self._update_datastore_file(lock=False)
        finally:
            tmp.unlink(missing_ok=True)
        logger.info(f"Stored image {image_id}{ext}")
        return image_id

    def remove_image(self, image_id: str) -> None:
        obj = self._known(image_id)
        self._refuse_linked(image_id, obj, "deleted")
        with self._locked():
            for tag in list(obj.labels):
                self._remove_label_file(image_id, tag, obj)
            remove_file(str(confine(self._datastore.image_path(), image_id, "image id", obj.image.ext)))
            self._datastore.objects.pop(image_id, None)
            self._update_datastore_file(lock=False)

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        self._known(image_id)
        if not isinstance(info, dict):
            raise HTTPException(status_code=422, detail="image info must be a JSON object")
        with self._locked():
            self._datastore.objects[image_id].image.info.update({k: v for k, v in info.items() if k not in ("ts", "name", "path")})
            self._update_datastore_file(lock=False)

    def update_image_infos(self, infos: Dict[str, Dict[str, Any]]) -> None:
        """Update many images' info with one write of the datastore file."""
        with self._locked():
            for image_id, info in infos.items():
                obj = self._datastore.objects.get(image_id)
                if obj is not None:
                    obj.image.info.update(info)
            self._update_datastore_file(lock=False)

    # ------------------------------------------------------------------ labels
    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        if not (is_safe_name(label_id) and is_safe_name(label_tag)):
            return ""
        return super().get_label_uri(label_id, label_tag)

    def get_label_info(self, label_id: str, label_tag: str) -> Dict[str, Any]:
        if not (is_safe_name(label_id) and is_safe_name(label_tag)):
            return {}
        return super().get_label_info(label_id, label_tag)

    def update_label_info(self, label_id: str, label_tag: str, info: Dict[str, Any]) -> None:
        obj = self._known(label_id)
        self._tag_dir(label_tag)
        if label_tag not in obj.labels:
            raise HTTPException(status_code=404, detail=f"image {label_id!r} has no label with tag {label_tag!r}")
        if not isinstance(info, dict):
            raise HTTPException(status_code=422, detail="label info must be a JSON object")
        with self._locked():
            obj.labels[label_tag].info.update({k: v for k, v in info.items() if k not in ("ts", "name")})
            self._update_datastore_file(lock=False)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        obj = self._known(image_id)
        tag_dir = self._tag_dir(label_tag)
        if label_tag == GAZE_TAG:
            return self._save_gaze(image_id, obj, label_filename, label_info)
        if not label_filename or not os.path.isfile(label_filename):
            raise HTTPException(status_code=422, detail=f"no label file to store for image {image_id!r} (tag {label_tag!r})")
        from gazerad.serving.infer import load_input

        shape = load_input(self.get_image_uri(image_id))[0].shape
        tmp = self._validated_image(label_filename, f"label {label_tag!r} of image {image_id!r}", shape=shape)
        try:
            ext = self._suffix_of(tmp)
            with self._locked():
                tag_dir.mkdir(exist_ok=True)
                old = obj.labels.get(label_tag)
                dest = confine(tag_dir, image_id, "image id", ext)
                os.replace(tmp, dest)
                if old is not None and old.ext != ext:
                    remove_file(str(confine(tag_dir, image_id, "image id", old.ext)))
                info = {k: v for k, v in dict(label_info or {}).items() if k not in ("ts", "name")}
                info.update(ts=int(time.time()), name=dest.name)
                obj.labels[label_tag] = DataModel(info=info, ext=ext)
                self._update_datastore_file(lock=False)
        finally:
            tmp.unlink(missing_ok=True)
        return image_id

    def _save_gaze(self, image_id: str, obj: Any, label_filename: str, label_info: Dict[str, Any]) -> str:
        from gazerad.serving.infer import load_input

        try:
            params = UploadParams.parse(label_info)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=f"gaze for image {image_id!r} rejected: {exc}") from None
        tmp = self._incoming(label_filename, self.max_gaze_bytes, f"gaze for image {image_id!r}")
        try:
            img, _ = load_input(self.get_image_uri(image_id))
            records = parse_gaze_upload(tmp, image_id, img.shape, reader_id=params.reader, pixels_per_degree=params.pixels_per_degree)
        except InputError as exc:
            # the upload is a temp file: name the image and the problem, not the temp path
            problem = exc.problem + (f" (row {exc.row})" if exc.row is not None else "")
            raise HTTPException(status_code=422, detail=f"gaze for image {image_id!r} rejected: {problem}") from None
        finally:
            tmp.unlink(missing_ok=True)
        with self._locked():
            self.gaze.put(image_id, records, replace=params.replace)
            summary = {**self.gaze.summary(image_id), "ts": int(time.time()), "name": f"{image_id}.json"}
            obj.labels[GAZE_TAG] = DataModel(info=summary, ext=".json")
            self._update_datastore_file(lock=False)
        logger.info(f"Stored gaze for {image_id}: {summary}")
        return image_id

    def _remove_label_file(self, image_id: str, tag: str, obj: Any) -> None:
        label = obj.labels.get(tag)
        if label is not None and is_safe_name(tag):
            remove_file(str(confine(self._tag_dir(tag), image_id, "image id", label.ext)))
        obj.labels.pop(tag, None)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        obj = self._known(label_id)
        self._tag_dir(label_tag)
        if label_tag not in obj.labels:
            raise HTTPException(status_code=404, detail=f"image {label_id!r} has no label with tag {label_tag!r}")
        with self._locked():
            self._remove_label_file(label_id, label_tag, obj)
            self._update_datastore_file(lock=False)

    def has_gaze(self, image_id: str) -> bool:
        return is_safe_name(image_id) and self.gaze.has(image_id)
