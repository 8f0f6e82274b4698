"""Gaze-guided contrastive pre-training (McGIP / GzPT / FocusContrast) and its evaluation.

- :mod:`~gazerad.pretrain.data`: study tables, in-memory images, the two-view dataset.
- :mod:`~gazerad.pretrain.frameworks`: SimCLR, MoCo v2, BYOL, SimSiam modules.
- :mod:`~gazerad.pretrain.config`: :class:`PretrainConfig`, config files.
- :mod:`~gazerad.pretrain.trainer`: :func:`pretrain`.
- :mod:`~gazerad.pretrain.evaluate`: linear probe, k-NN and fine-tune evaluation.
"""

from gazerad._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "PretrainConfig": "config",
        "pretrain": "trainer",
        "load_config": "config",
        "load_encoder": "trainer",
        "build_framework": "frameworks",
        "TwoViewDataset": "data",
        "read_study_table": "data",
        "evaluate_encoder": "evaluate",
    },
)
