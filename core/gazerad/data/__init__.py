"""Data-set tables and the study folder.

* :mod:`gazerad.data.study`: the study folder (``labels.csv`` + ``images/``), its one
  ``labels.csv`` reader, the supported image suffixes (from :mod:`gazerad.io.xray`), image
  lookup and the image-id rules, used by the trainers, the server and the app.
* :mod:`gazerad.data.nih`: NIH ChestX-ray14 boxes and ``Finding Labels`` tables.
* :mod:`gazerad.data.layouts`: NIH ChestX-ray14 and MIMIC-CXR(-JPG) roots read in place as
  study folders (:func:`open_study_folder`), the server's linked study folder.
* :mod:`gazerad.data.check`: ``gazerad datasets check`` (:func:`check_dataset`).

Gaze files (REFLACX and the other formats) are read by :mod:`gazerad.gaze.importers`.
"""

from gazerad.data.check import check_dataset, format_report
from gazerad.data.layouts import LayoutFolder, detect_layout, link_study_folder, open_study_folder
from gazerad.data.nih import read_bbox_list, read_labels
from gazerad.data.study import (
    LabelsTable,
    StudyFolder,
    check_image_id,
    find_image,
    has_image_suffix,
    image_id_of,
    image_suffix,
    image_suffixes,
    is_study_folder,
    read_labels_table,
)

__all__ = [
    "check_dataset",
    "format_report",
    "LayoutFolder",
    "detect_layout",
    "link_study_folder",
    "open_study_folder",
    "read_bbox_list",
    "read_labels",
    "LabelsTable",
    "StudyFolder",
    "check_image_id",
    "find_image",
    "has_image_suffix",
    "image_id_of",
    "image_suffix",
    "image_suffixes",
    "is_study_folder",
    "read_labels_table",
]
