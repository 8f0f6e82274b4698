"""GazeRadLib: everything the GazeRad Slicer module does that does not need Slicer.

Plain Python (standard library + numpy), so it runs in Slicer's Python, where ``gazerad``,
torch and SimpleITK are not installed, and in CI against a real server.
"""

from .client import (  # noqa: F401
    AuthRequired,
    GazeRadClient,
    GazeRadError,
    ModelNotReady,
    NotFound,
    ServerBusy,
    ServerError,
    ServerTimeout,
    ServerUnreachable,
    decode_multipart,
    encode_multipart,
    gaze_upload_parts,
)
from .conversions import (  # noqa: F401
    MARKUPS_SCHEMA,
    HeatmapVolume,
    TrainingProgress,
    colour_table,
    heatmap_volume,
    localization_status,
    pixel_to_ras,
    roi_markups,
    scanpath_markups,
    score_table,
    training_progress,
)
from .nrrd import Geometry, NrrdError, parse_header, read_nrrd  # noqa: F401
