"""Server-side logic of GazeRad (used by the MONAI Label app; no MONAI Label imports here).

- :mod:`gazerad.serving.data`: a datastore folder as images, labels, boxes and gaze.
- :mod:`gazerad.serving.infer`: attention / localisation / classification services that
  reload published weights.
- :mod:`gazerad.serving.train`: training jobs that publish weights atomically.
- :mod:`gazerad.serving.active`: active-learning scores.
- :mod:`gazerad.serving.launch`: ``gazerad serve``.
"""
