"""kNN probe (``cxrcl eval knn``): no training at all, so it measures the embedding geometry.

Protocol: same features, label fractions, seeds and JSON as the linear probe (task ``"knn"``).
Features are L2-normalised; for each test image the k most cosine-similar labelled train images
(known label only; k capped at their number) vote with weights exp(similarity / 0.07) (the
weighted kNN of InstDisc / DINO); the score is the weighted fraction of positive votes, and AUROC
is computed from it. The val split is not used: k is fixed, not selected (the JSON's
``protocol.val_labels`` says so).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from cxrcl.data.prepared import PreparedDataset
from cxrcl.evaluation.features import Features
from cxrcl.evaluation.fractions import DEFAULT_FRACTIONS
from cxrcl.evaluation.results import run_probe

TEMPERATURE = 0.07


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, k: int = 20,
               temperature: float = TEMPERATURE, chunk: int = 1024) -> np.ndarray:
    """Weighted-vote positive probability for each test row (inputs already L2-normalised)."""
    k = int(min(k, len(x_train)))
    y = y_train.astype(np.float32)
    out = np.empty(len(x_test), np.float32)
    for a in range(0, len(x_test), chunk):
        sim = x_test[a:a + chunk] @ x_train.T  # [c, n_train]
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < sim.shape[1] else \
            np.broadcast_to(np.arange(sim.shape[1]), sim.shape)
        s = np.take_along_axis(sim, idx, axis=1)
        w = np.exp((s - s.max(axis=1, keepdims=True)) / temperature)
        out[a:a + chunk] = (w * y[idx]).sum(axis=1) / w.sum(axis=1)
    return out


def knn_probe(ds: PreparedDataset | str | os.PathLike, extract, labels: str | Sequence[str],
              fractions=DEFAULT_FRACTIONS, seeds: int | Sequence[int] = 3, k: int = 20,
              degrade_level: int = 0, run_name: str = "encoder", *, batch_size: int = 256,
              features: Features | None = None, extra: dict | None = None) -> dict:
    """Cosine kNN AUROC at each label fraction and seed; the eval JSON with task ``"knn"``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")

    def fit_predict(xt, yt, xv, yv, xte):
        return knn_scores(xt, yt, xte, k=k), {"k": int(min(k, len(xt)))}

    protocol = {"classifier": f"cosine kNN, k={k}, weights exp(sim/{TEMPERATURE})",
                "fraction_sampler": "cxrcl.evaluation.fractions.sample_label_fraction"}
    return run_probe(ds, extract, labels, task="knn", fit_predict=fit_predict,
                     fractions=fractions, seeds=seeds, degrade_level=degrade_level,
                     run_name=run_name, batch_size=batch_size, features=features,
                     transform=l2_normalize, protocol=protocol, extra={"k": int(k), **(extra or {})},
                     val_labels=None)
