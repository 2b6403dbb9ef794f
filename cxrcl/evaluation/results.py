"""The shared probe loop and the eval JSON every probe writes (CLI.md, "Evaluation").

:func:`run_probe` is the protocol common to the linear and kNN probes: features of train / val /
test are extracted once; for every (fraction, seed) the labelled sample is drawn from the train
split by :func:`cxrcl.evaluation.fractions.sample_label_fraction` (seeds control that sample and
nothing else); so are the val labels a probe may select hyper-parameters on, at the same fraction
and seed (``val_labels="matched"``, the default: at 1 % labels a user does not have a full
labelled val split either) or all of them (``"full"``); per label, a probe is fitted on the
sampled rows whose label is known and scored by AUROC on the test rows whose label is known. Identical samples (e.g. fraction 1.0 under every
seed) are evaluated once and reused, since the probes are deterministic.

JSON (:func:`build_result`)::

    {"task", "run", "labels", "data": {"path", "source", "content_hash", "split_hash", "n", "size"},
     "degrade_test", "feature_dim", "protocol": {...},
     "results": [{"fraction", "seed", "n_train", "n_val", "n_train_per_label", "n_val_per_label",
                  "auroc", "auroc_per_label",
                  ...probe details per label}],
     "summary": {"0.01": {"auroc_mean", "auroc_std", "n_train_mean", "n_seeds",
                          "auroc_per_label_mean"}}, "cxrcl_version", "timing"}

``auroc`` is the macro mean over labels; ``auroc_std`` is the sample std (ddof=1) over seeds
(0.0 for one seed).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from cxrcl.data.prepared import PreparedDataset
from cxrcl.errors import CxrclError
from cxrcl.evaluation.bootstrap import attach_uncertainty, externalize_scores
from cxrcl.evaluation.features import Features, extract_splits
from cxrcl.evaluation.fractions import (
    DEFAULT_FRACTIONS,
    parse_fractions,
    sample_label_fraction,
    seed_list,
)
from cxrcl.evaluation.outputs import write_json

# fit_predict(x_train, y_train, x_val, y_val, x_test) -> (test scores, {detail: value})
# Which val labels a probe may select its hyper-parameters on (recorded in the JSON's protocol).
VAL_LABELS = {
    "matched": "matched: the val labels used for selection are sampled at the same fraction and "
               "seed as the train labels (stratified, >= 1 positive and 1 negative per label), as "
               "a user with that few labels has them; all of val at fraction 1.0",
    "full": "full: every known val label is used for selection at every fraction (more labels "
            "than the fraction implies)",
}
VAL_UNUSED = "unused: nothing is selected on the val split"
FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                      tuple[np.ndarray, dict]]


def open_dataset(ds: PreparedDataset | str | os.PathLike) -> PreparedDataset:
    return ds if isinstance(ds, PreparedDataset) else PreparedDataset.open(ds)


def check_both_classes(ds: PreparedDataset, labels: Sequence[str], split: str) -> None:
    """CxrclError naming the label and data set if ``split`` lacks known positives or negatives."""
    rows = ds.indices(split)
    if len(rows) == 0:
        raise CxrclError(f"{ds.root} has no {split} images: prepare it with a split that has a "
                         f"{split} part, e.g. --split patient:0.7,0.1,0.2")
    y = ds.labels(labels, rows)
    for j, name in enumerate(labels):
        n_pos, n_neg = int((y[:, j] == 1).sum()), int((y[:, j] == 0).sum())
        if n_pos == 0 or n_neg == 0:
            raise CxrclError(
                f"label {name!r} has {n_pos} positive and {n_neg} negative known {split} images in "
                f"{ds.root}: AUROC needs both; drop the label (--label) or re-split the data set")


def run_probe(ds: PreparedDataset | str | os.PathLike, extract, labels: str | Sequence[str], *,
              task: str, fit_predict: FitPredict, fractions=DEFAULT_FRACTIONS,
              seeds: int | Sequence[int] = 3, degrade_level: int = 0, run_name: str = "encoder",
              batch_size: int = 256, features: Features | None = None,
              transform: Callable[[np.ndarray], np.ndarray] | None = None,
              protocol: dict | None = None, extra: dict | None = None,
              val_labels: str | None = "matched") -> dict:
    """Run one probe over all (fraction, seed) pairs and return the eval JSON (a dict).

    ``features`` (the output of :func:`extract_splits`) skips extraction; ``transform`` is applied
    to every split's features once (e.g. L2 normalisation for kNN). ``val_labels`` says which
    val labels ``fit_predict`` may select on (:data:`VAL_LABELS`); ``None`` for a probe that
    selects nothing on val.
    """
    if val_labels is not None and val_labels not in VAL_LABELS:
        raise CxrclError(f"--val-labels {val_labels!r}: choose one of {', '.join(VAL_LABELS)}")
    ds = open_dataset(ds)
    labels = ds.resolve_labels(labels)
    fractions = parse_fractions(fractions)
    seeds = seed_list(seeds)
    check_both_classes(ds, labels, "test")
    check_both_classes(ds, labels, "train")

    t0 = time.perf_counter()
    if features is None:
        features = extract_splits(ds, extract, batch_size=batch_size, degrade_level=degrade_level)
    t1 = time.perf_counter()
    (ftr, rtr), (fva, rva), (fte, rte) = (features[s] for s in ("train", "val", "test"))
    if transform is not None:
        ftr, fva, fte = transform(ftr), transform(fva), transform(fte)
    ytr, yva, yte = ds.labels(labels, rtr), ds.labels(labels, rva), ds.labels(labels, rte)

    results, cache, test_scores = [], {}, []
    for fraction in fractions:
        for seed in seeds:
            sample = sample_label_fraction(ytr, fraction, seed)
            val_sample = val_rows(yva, fraction, seed, val_labels)
            key = sample.tobytes() + b"/" + val_sample.tobytes()
            if key not in cache:
                cache[key] = _evaluate_sample(sample, val_sample, labels, fit_predict, ftr, ytr,
                                              fva, yva, fte, yte)
            n_val = {"n_val": int(len(val_sample))} if val_labels is not None else {}
            info, scores = cache[key]
            results.append({"fraction": fraction, "seed": seed, "n_train": int(len(sample)), **n_val,
                            **json.loads(json.dumps(info))})
            test_scores.append(scores)
    t2 = time.perf_counter()
    protocol = {**(protocol or {}), "val_labels": VAL_LABELS.get(val_labels, VAL_UNUSED)}
    if degrade_level:
        protocol = {**protocol, "degrade_seed": 0,
                    "degrade": "cxrcl.data.degrade.degrade on the test split only"}
    result = build_result(task=task, run_name=run_name, labels=labels, ds=ds,
                          degrade_level=degrade_level, feature_dim=int(ftr.shape[1]),
                          results=results, protocol=protocol,
                          timing={"extract_s": round(t1 - t0, 3), "probe_s": round(t2 - t1, 3)},
                          extra=extra)
    return attach_uncertainty(result, rte, yte, np.stack(test_scores))  # CIs (bootstrap.py)


def val_rows(y_val: np.ndarray, fraction: float, seed: int, val_labels: str | None) -> np.ndarray:
    """Positions (into the val split) of the labels a probe may select on: ``"matched"`` samples
    them like the train labels (same fraction and seed, stratified, >= 1 positive and negative per
    label where val has them); ``"full"`` (and fraction 1.0) keeps every val row; ``None`` (a probe
    that uses no val labels) none."""
    if val_labels is None:
        return np.arange(0)
    if val_labels == "matched":
        return sample_label_fraction(y_val, fraction, seed)
    return np.arange(len(y_val))


def _evaluate_sample(sample, val_sample, labels, fit_predict, ftr, ytr, fva, yva, fte, yte) -> dict:
    per_label, n_per_label, n_val_per_label, details = {}, {}, {}, {}
    test_scores = np.full(yte.shape, np.nan)
    fva, yva = fva[val_sample], yva[val_sample]
    for j, name in enumerate(labels):
        y_s = ytr[sample, j]
        known = ~np.isnan(y_s)
        x_train, y_train = ftr[sample][known], y_s[known].astype(int)
        if len(np.unique(y_train)) < 2:  # impossible when the train split has both classes
            raise CxrclError(f"the labelled sample for {name!r} holds one class only")
        vm, tm = ~np.isnan(yva[:, j]), ~np.isnan(yte[:, j])
        scores, info = fit_predict(x_train, y_train, fva[vm], yva[vm, j].astype(int), fte[tm])
        per_label[name] = float(roc_auc_score(yte[tm, j].astype(int), scores))
        test_scores[tm, j] = scores
        n_per_label[name] = int(known.sum())
        if len(val_sample):
            n_val_per_label[name] = int(vm.sum())
        for k, v in info.items():
            details.setdefault(f"{k}_per_label", {})[name] = v
    val = {"n_val_per_label": n_val_per_label} if n_val_per_label else {}
    return {"n_train_per_label": n_per_label, **val, "auroc": float(np.mean(list(per_label.values()))),
            "auroc_per_label": per_label, **details}, test_scores


def summarize(results: Sequence[dict]) -> dict:
    """Per fraction (key ``str(fraction)``): mean and sample std of the macro AUROC over seeds."""
    out: dict[str, dict] = {}
    for fraction in sorted({r["fraction"] for r in results}):
        rs = [r for r in results if r["fraction"] == fraction]
        auc = np.array([r["auroc"] for r in rs], dtype=float)
        per_label = {name: float(np.mean([r["auroc_per_label"][name] for r in rs]))
                     for name in rs[0].get("auroc_per_label", {})}
        out[str(fraction)] = {
            "auroc_mean": float(auc.mean()),
            "auroc_std": float(auc.std(ddof=1)) if len(auc) > 1 else 0.0,
            "n_train_mean": float(np.mean([r["n_train"] for r in rs])),
            "n_seeds": len(rs),
            "auroc_per_label_mean": per_label,
        }
    return out


def build_result(*, task: str, run_name: str, labels: Sequence[str], ds: PreparedDataset,
                 degrade_level: int, feature_dim: int | None, results: list[dict],
                 protocol: dict | None = None, timing: dict | None = None,
                 extra: dict | None = None) -> dict:
    """Assemble the eval JSON (see the module docstring); ``extra`` keys are added at top level
    (e.g. ``command``, ``checkpoint``)."""
    from cxrcl import __version__

    info = ds.info
    result = {
        "task": task,
        "run": str(run_name),
        "labels": list(labels),
        "data": {
            "path": str(ds.root),
            "source": info.get("source"),
            "content_hash": info.get("content_hash"),
            "split_hash": ds.split_hash,
            "n": {s: int(len(ds.indices(s))) for s in ("train", "val", "test")},
            "size": ds.size,
        },
        "degrade_test": int(degrade_level),
        "feature_dim": feature_dim,
        "protocol": protocol or {},
        "results": results,
        "summary": summarize(results),
        "cxrcl_version": __version__,
    }
    if timing:
        result["timing"] = timing
    result.update(extra or {})
    return result


def _clean(obj):
    """numpy scalars/arrays -> Python; NaN/inf -> None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_json(result: dict, path: str | os.PathLike) -> Path:
    """Write ``result`` as indented strict JSON (NaN -> null), atomically (temp file + rename);
    inline per-test-image scores go to the sidecar ``.scores.npz`` (bootstrap.externalize_scores)."""
    return write_json(_clean(externalize_scores(result, path)), path)


def load_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CxrclError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CxrclError(f"{path} is not valid JSON ({e})") from None
