"""GazeRad's MONAI Label app: thin MONAI Label classes over :mod:`gazerad.serving`."""
