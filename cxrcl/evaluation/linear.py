"""Linear probe (``cxrcl eval linear``): frozen features -> one logistic regression per label.

Protocol: features of train / val / test are extracted once (the test split optionally
degraded); for every label fraction and seed the labelled sample comes from
:mod:`cxrcl.evaluation.fractions`; per label, a scaler + L2 logistic regression is
fitted on the sampled train rows whose label is known, C is chosen from ``C_GRID`` by AUROC on
the val rows with a known label (ties -> the smaller C, i.e. more regularisation; if val lacks a
class for that label, C = 1.0 and ``c_selected_by`` records ``"default"``), and the chosen model
is scored by AUROC on the test rows with a known label. Seeds change the labelled samples only.
The val rows are themselves sampled at the label fraction by default (``val_labels="matched"``):
choosing C on the full val split at 1 % labels uses ten times more labels than the probe is
allowed to train on, which a user with 1 % of the labels does not have.

Our choice of scaler (``scaler="global"``, the default): centre every feature and divide all of
them by ONE scale, the RMS of the centred features, both fitted on the labelled rows. This makes
the C grid mean the same for encoders of any feature scale while keeping the relative scale of
the features. Per-feature standardisation (``scaler="standard"``, sklearn's StandardScaler)
whitens the features: it inflates low-variance noise directions to the same weight as the
signal, which on PneumoniaMNIST cut the pixel-PCA floor at 1 % labels from 0.90 to 0.60 AUROC
(0.93 at 100 % either way), flattering every encoder compared with the floor.

>>> res = linear_probe(ds, encoder, ["pneumonia"], fractions=(0.01, 0.1, 1.0), seeds=3,
...                    run_name="runs/spcl")
>>> save_json(res, "eval/spcl_linear.json")
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from cxrcl.data.prepared import PreparedDataset
from cxrcl.evaluation.features import Features
from cxrcl.evaluation.fractions import DEFAULT_FRACTIONS
from cxrcl.evaluation.results import run_probe, save_json

__all__ = ["C_GRID", "GlobalScaler", "linear_probe", "save_json", "fit_predict_logistic"]

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
DEFAULT_C = 1.0
MAX_ITER = 2000
NEWTON_MAX_DIM = 1024


class GlobalScaler:
    """Centre per feature, divide by one scalar (RMS of the centred features)."""

    def fit(self, x: np.ndarray) -> GlobalScaler:
        x = np.asarray(x, dtype=np.float64)
        self.mean_ = x.mean(axis=0)
        rms = float(np.sqrt(((x - self.mean_) ** 2).sum(axis=1).mean() / max(x.shape[1], 1)))
        self.scale_ = rms if rms > 1e-12 else 1.0
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean_) / self.scale_


SCALERS = {"global": GlobalScaler, "standard": StandardScaler}


def _solver(x: np.ndarray) -> str:
    """Newton-Cholesky (exact, ~10 iterations at any conditioning) up to NEWTON_MAX_DIM features,
    else lbfgs."""
    return "newton-cholesky" if x.shape[1] <= NEWTON_MAX_DIM else "lbfgs"


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    clf = LogisticRegression(C=c, max_iter=MAX_ITER, solver=_solver(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    return clf


def fit_predict_logistic(x_train, y_train, x_val, y_val, x_test, c_grid: Sequence[float] = C_GRID,
                         scaler: str = "global"):
    """Scaler + logistic regression with C chosen on val; returns (test scores, details)."""
    sc = SCALERS[scaler]().fit(x_train)
    xt, xte = sc.transform(x_train), sc.transform(x_test)
    if len(np.unique(y_val)) < 2:
        clf = _fit(xt, y_train, DEFAULT_C)
        return clf.decision_function(xte), {"C": DEFAULT_C, "c_selected_by": "default"}
    xv = sc.transform(x_val)
    # C ascending with warm starts (each fit starts from the previous, more regularised solution)
    clf = LogisticRegression(C=c_grid[0], max_iter=MAX_ITER, warm_start=True, solver=_solver(xt))
    best = None
    for c in sorted(c_grid):
        clf.set_params(C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(xt, y_train)
        auc = roc_auc_score(y_val, clf.decision_function(xv))
        if best is None or auc > best[0] + 1e-12:
            best = (auc, c, clf.coef_.copy(), clf.intercept_.copy())
    auc, c, coef, intercept = best
    scores = xte @ coef[0] + intercept[0]
    return scores, {"C": float(c), "c_selected_by": "val", "val_auroc": float(auc)}


def linear_probe(ds: PreparedDataset | str | os.PathLike, extract, labels: str | Sequence[str],
                 fractions=DEFAULT_FRACTIONS, seeds: int | Sequence[int] = 3,
                 degrade_level: int = 0, run_name: str = "encoder", *,
                 c_grid: Sequence[float] = C_GRID, scaler: str = "global", batch_size: int = 256,
                 features: Features | None = None, extra: dict | None = None,
                 val_labels: str = "matched") -> dict:
    """Linear-probe AUROC at each label fraction and seed; returns the CLI.md eval JSON (task
    ``"linear"``). ``extract``: images uint8 [N, H, W] -> float32 [N, D]; ``labels``: names,
    a comma list or ``"all"``; ``seeds``: K (seeds 0..K-1) or a list; ``val_labels``: the val
    labels C is chosen on, ``"matched"`` (sampled at the same fraction and seed as the train
    labels) or ``"full"`` (see :data:`cxrcl.evaluation.results.VAL_LABELS`)."""
    grid = tuple(float(c) for c in c_grid)
    if scaler not in SCALERS:
        raise ValueError(f"scaler must be one of {sorted(SCALERS)}, got {scaler!r}")

    def fit_predict(xt, yt, xv, yv, xte):
        return fit_predict_logistic(xt, yt, xv, yv, xte, grid, scaler)

    protocol = {
        "classifier": f"LogisticRegression(L2; newton-cholesky up to {NEWTON_MAX_DIM} features, "
                      "else lbfgs) per label",
        "scaler": scaler + (" (centre per feature, one global RMS scale)" if scaler == "global"
                            else " (per-feature standardisation)"),
        "C_grid": list(grid),
        "C_selection": "AUROC on the val labels of 'val_labels' (ties -> smaller C); C=1.0 when "
                       "they lack a class",
        "fraction_sampler": "cxrcl.evaluation.fractions.sample_label_fraction (stratified, "
                            ">=1 positive and negative per label, nested over fractions)",
    }
    return run_probe(ds, extract, labels, task="linear", fit_predict=fit_predict,
                     fractions=fractions, seeds=seeds, degrade_level=degrade_level,
                     run_name=run_name, batch_size=batch_size, features=features,
                     protocol=protocol, extra=extra, val_labels=val_labels)
