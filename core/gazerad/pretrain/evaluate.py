"""Downstream evaluation of a pre-trained encoder: linear probe, k-NN, fine-tuning.

The encoder (``encoder.pt`` from :func:`gazerad.pretrain.pretrain`, or ``None`` for a
randomly initialised backbone as the floor) is evaluated on a study folder: trained on the
``train`` split, scored on the held-out ``test`` split (``validate`` too unless asked).

- ``linear``: frozen features of the centred, resized image, standardised; logistic
  regression per class (scikit-learn, ``C`` = 1).
- ``knn``: cosine k-NN (k = 10) on the frozen features.
- ``finetune``: the backbone and a new linear head trained end to end (Adam, lr 1e-3,
  wd 1e-5, cosine, BCE / cross-entropy), as in the authors' evaluation, scaled down.

Metrics: ``accuracy`` (multilabel: mean per-class accuracy at 0.5; multiclass/ordinal: top-1),
``auc`` (macro ROC AUC over classes present in the test split), ``mae`` (ordinal task).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["extract_features", "evaluate_encoder", "score"]


@torch.no_grad()
def extract_features(net: torch.nn.Module, images: torch.Tensor, size: int, batch: int = 64, device: str | torch.device = "cpu") -> np.ndarray:
    """``(N, 1, S, S)`` images -> ``(N, F)`` features at ``size x size`` (eval mode)."""
    net = net.to(device).eval()
    out = []
    for s in range(0, len(images), batch):
        x = images[s : s + batch].to(device)
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="area")
        out.append(net(x).float().cpu())
    return torch.cat(out).numpy()


def score(task: str, y_true: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Accuracy, macro ROC AUC (and MAE for ``ordinal``) from class probabilities.

    ``prob``: multilabel ``(N, C)`` per-class probabilities; otherwise ``(N, K)`` softmax.
    """
    from sklearn.metrics import roc_auc_score

    res: dict[str, float] = {}
    if task == "multilabel":
        res["accuracy"] = float(((prob >= 0.5) == (y_true > 0)).mean())
        aucs = [roc_auc_score(y_true[:, c], prob[:, c]) for c in range(y_true.shape[1]) if 0 < y_true[:, c].sum() < len(y_true)]
    else:
        pred = prob.argmax(1)
        res["accuracy"] = float((pred == y_true).mean())
        aucs = [roc_auc_score(y_true == k, prob[:, k]) for k in range(prob.shape[1]) if 0 < (y_true == k).sum() < len(y_true)]
        if task == "ordinal":
            res["mae"] = float(np.abs(pred - y_true).mean())
    res["auc"] = float(np.mean(aucs)) if aucs else float("nan")
    return res


def _fit_sklearn(task: str, protocol: str, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, n_out: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    if protocol == "knn":

        def make():  # noqa: ANN202
            return KNeighborsClassifier(n_neighbors=min(10, len(xtr)), metric="cosine", weights="distance")
    else:
        sc = StandardScaler().fit(xtr)
        xtr, xte = sc.transform(xtr), sc.transform(xte)

        def make():  # noqa: ANN202
            return LogisticRegression(C=1.0, max_iter=2000)

    if task == "multilabel":
        prob = np.zeros((len(xte), ytr.shape[1]))
        for c in range(ytr.shape[1]):
            if ytr[:, c].min() == ytr[:, c].max():
                prob[:, c] = float(ytr[0, c])
                continue
            prob[:, c] = make().fit(xtr, ytr[:, c]).predict_proba(xte)[:, 1]
        return prob
    clf = make().fit(xtr, ytr)
    prob = np.zeros((len(xte), n_out))
    prob[:, clf.classes_] = clf.predict_proba(xte)
    return prob


def _finetune(
    net: torch.nn.Module,
    fdim: int,
    task: str,
    xtr: torch.Tensor,
    ytr: np.ndarray,
    xte: torch.Tensor,
    n_out: int,
    size: int,
    epochs: int,
    seed: int,
    device: str | torch.device,
    precision: str = "auto",
) -> np.ndarray:
    from gazerad.engine.loop import Events, TrainLoop
    from gazerad.engine.runtime import Runtime
    from gazerad.pretrain.data import ViewAugment

    torch.manual_seed(seed)
    rt = Runtime(torch.device(device), precision)
    head = torch.nn.Linear(fdim, n_out)
    model = rt.model(torch.nn.Sequential(net, head))
    opt = rt.optimizer("Adam", model.parameters(), lr=1e-3, weight_decay=1e-5)
    steps = epochs * max(1, len(xtr) // 16)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    y = torch.as_tensor(ytr, dtype=torch.float32 if task == "multilabel" else torch.long)
    aug = ViewAugment(blur_p=0.0, solarize_p=0.0, jitter=0.1)
    rng = np.random.RandomState(seed)

    class _Batches:  # a fresh shuffle of the training indices per epoch, batches of 16 (a last one of 1 is skipped)
        def __len__(self) -> int:
            return sum(len(s) >= 2 for s in torch.arange(len(xtr)).split(16))

        def __iter__(self):  # noqa: ANN204
            return (s for s in torch.randperm(len(xtr)).split(16) if len(s) >= 2)

    def step(s: torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.stack([aug(xtr[i], rng) for i in s.tolist()])
        x = F.interpolate(x, size=(size, size), mode="area") if x.shape[-1] != size else x
        with rt.autocast():
            logits = model(rt.batch(x)).float()
        target = y[s].to(device)
        return {"loss": F.binary_cross_entropy_with_logits(logits, target) if task == "multilabel" else F.cross_entropy(logits, target)}

    loop = TrainLoop(step, optimizer=opt, scheduler=sched, scaler=rt.scaler(), max_epochs=epochs)
    loop.on(Events.EPOCH_STARTED, lambda lp: model.train())
    loop.run(_Batches())
    feats = extract_features(model, xte, size, device=device)
    return 1 / (1 + np.exp(-feats)) if task == "multilabel" else torch.softmax(torch.from_numpy(feats), 1).numpy()


def evaluate_encoder(
    encoder: str | os.PathLike | None,
    data: str | os.PathLike,
    protocol: str = "linear",
    task: str = "multilabel",
    backbone: str | None = None,
    image_size: int | None = None,
    test_splits: tuple[str, ...] = ("test", "validate"),
    epochs: int = 10,
    seed: int = 0,
    device: str | torch.device | None = None,
    images: torch.Tensor | None = None,
    train_rows: np.ndarray | None = None,
    test_rows: np.ndarray | None = None,
    features: np.ndarray | None = None,
) -> dict[str, Any]:
    """Evaluate ``encoder`` on ``data`` (see the module docstring) -> metrics dict.

    ``images`` may pass the study's images preloaded by :func:`gazerad.data.inputs.encoder_inputs`
    (all rows of ``labels.csv``, at any square size) to skip reading them again.
    ``train_rows`` / ``test_rows`` (row indices of ``labels.csv``) replace the ``train`` split
    and ``test_splits`` (e.g. a labelled fraction of the training split, or the validation
    split for choosing hyper-parameters); ``features`` (all rows, from :func:`extract_features`
    of this encoder) skip the forward passes of the linear and k-NN protocols.
    """
    from gazerad.data.inputs import encoder_inputs
    from gazerad.pretrain.data import read_study_table
    from gazerad.pretrain.trainer import load_encoder
    from gazerad.ssl import build_backbone

    if protocol not in ("linear", "knn", "finetune"):
        raise ValueError(f"unknown protocol {protocol!r}; choose linear, knn or finetune")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if encoder is None:
        torch.manual_seed(seed)
        name = backbone or "resnet18"
        net, _ = build_backbone(name)
        cfg: dict[str, Any] = {"backbone": name, "image_size": image_size or 128}
    else:
        net, cfg = load_encoder(encoder, dev)
    size = image_size or int(cfg["image_size"])
    table = read_study_table(data)
    tr = table.subset("train") if train_rows is None else np.asarray(train_rows, dtype=np.int64)
    te = table.subset(test_splits) if test_rows is None else np.asarray(test_rows, dtype=np.int64)
    if len(tr) < 4 or len(te) < 2:
        raise ValueError(f"{data}: need >= 4 train and >= 2 held-out images, found {len(tr)} and {len(te)}")
    y = table.targets(task)
    n_out = y.shape[1] if task == "multilabel" else int(y.max()) + 1
    if images is None:
        images = encoder_inputs(table.paths, size)
    if protocol == "finetune":
        with torch.no_grad():  # the head's input size (only the fine-tune builds a head)
            fdim = int(net.to(dev).eval()(torch.zeros(1, 1, size, size, device=dev)).shape[1])
        prob = _finetune(net, fdim, task, images[tr], y[tr], images[te], n_out, size, epochs, seed, dev)
    else:
        feats = extract_features(net, images, size, device=dev) if features is None else features
        prob = _fit_sklearn(task, protocol, feats[tr], y[tr], feats[te], n_out)
    res = score(task, y[te], prob)
    res.update(protocol=protocol, task=task, n_train=int(len(tr)), n_test=int(len(te)), encoder=None if encoder is None else os.fspath(encoder))
    return res
