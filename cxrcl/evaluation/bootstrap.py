"""Uncertainty of every AUROC: 95 % bootstrap confidence intervals, and a paired bootstrap test.

What EVALUATION.md asks: every AUROC carries a 95 % CI over test images (and over seeds where
seeds vary), and a paired test between a method and its baseline on the same test images says
whether a difference is real.

Our choices:

- Percentile bootstrap, ``N_BOOT`` = 1000 resamples of the test images with a fixed seed (0), so
  the same eval gives the same CI. One resample of images is shared by every label (the macro
  AUROC of a resample is the mean of its per-label AUROCs, each on the resampled rows whose label
  is known) and, in a paired test, by both methods.
- The summary CI (per fraction, ``summary[f]["auroc_ci"]``) resamples test images *and* seeds:
  replicate b draws images, then K seeds with replacement, and averages the drawn seeds' macro
  AUROC on the drawn images. With one seed it is the image CI.
- AUROC is sklearn's ``roc_auc_score`` for every point estimate. The resamples use
  :func:`weighted_auroc`, the same statistic written as a Mann-Whitney sum with the resample's
  multiplicity of each image as its weight, vectorised over resamples (equal to
  ``roc_auc_score(y, s, sample_weight=counts)``, ties counted 1/2, tested): 1000 calls of
  ``roc_auc_score`` cost ~2 s per label and result on 2.7k test images, this costs ~0.05 s.
- A resample in which a label lacks a class has no AUROC; it is dropped (``n_boot_valid``).
- Paired test (:func:`paired_bootstrap`): the same image resamples for both result sets, and
  seeds paired by number (seed s draws the same labelled images for every encoder); ``diff`` is
  mean over seeds of AUROC(a) - AUROC(b), ``ci`` its percentile interval, ``p`` the two-sided
  bootstrap p-value 2 min(P*(d <= 0), P*(d >= 0)) (with +1 smoothing), ``significant`` = the CI
  excludes 0.

Storage: a probe's result dict carries its per-test-image scores inline under ``test_scores``
(plain lists, so the dict stays JSON-serialisable); :func:`externalize_scores` (called by
``save_json``) moves them into a sidecar ``FILE.scores.npz`` next to ``FILE.json`` and leaves
``{"file", "sha256", ...}`` in the JSON. The CIs are in the JSON itself; only the paired test
reads the sidecar.

>>> res = paired_bootstrap("eval/spcl_linear.json", "eval/random_linear.json", fraction=0.1)
>>> res["diff"], res["ci"], res["p"], res["significant"]
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from cxrcl.errors import CxrclError

__all__ = ["N_BOOT", "ALPHA", "attach_uncertainty", "auroc_ci", "bootstrap_counts",
           "common_fractions", "externalize_scores", "load_scores", "mean_ci", "paired_bootstrap",
           "scores_path", "weighted_auroc"]

N_BOOT = 1000
ALPHA = 0.05
BOOT_SEED = 0
SCORE_KEYS = {"rows", "y", "scores", "labels", "fraction", "seed"}
_CHUNK = 4_000_000  # resamples x rows per vectorised block (~32 MB of float64)


# ----------------------------------------------------------------------------- the statistic
def bootstrap_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicity of each of ``n`` items in each of ``n_boot`` resamples: int [n_boot, n]."""
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = idx + (np.arange(n_boot) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n).reshape(n_boot, n)


def weighted_auroc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUROC of scores ``s`` for binary ``y`` under each row of weights ``w`` [B, n] -> [B].

    P(score of a positive > score of a negative) + 1/2 P(tie), positives and negatives weighted
    by ``w``; NaN where the weights leave no positive or no negative.
    """
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    order = np.argsort(s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])  # last index of each tie group
    out = np.empty(len(w))
    step = max(1, _CHUNK // max(len(s), 1))
    for a in range(0, len(w), step):
        ws = w[a:a + step][:, order]
        pos = np.cumsum(ws * y_sorted, axis=1)[:, ends]
        neg = np.cumsum(ws * ~y_sorted, axis=1)[:, ends]
        pos_g = np.diff(pos, axis=1, prepend=0.0)
        neg_g = np.diff(neg, axis=1, prepend=0.0)
        below = neg - neg_g  # negative weight strictly below each tie group
        num = (pos_g * (below + 0.5 * neg_g)).sum(axis=1)
        den = pos[:, -1] * neg[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[a:a + step] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out


def _macro_replicates(y: np.ndarray, s: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Macro AUROC (mean over labels) of each resample: y, s [n, L] (NaN = unknown), counts [B, n]."""
    per_label = []
    for j in range(y.shape[1]):
        known = ~np.isnan(y[:, j])
        per_label.append(weighted_auroc(y[known, j], s[known, j], counts[:, known]))
    return np.mean(per_label, axis=0)


def _percentile(values: np.ndarray, alpha: float) -> list[float | None]:
    v = values[np.isfinite(values)]
    if not len(v):
        return [None, None]
    lo, hi = np.percentile(v, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return [float(lo), float(hi)]


def auroc_ci(y, s, n_boot: int = N_BOOT, alpha: float = ALPHA, seed: int = BOOT_SEED) -> list:
    """95 % (for alpha 0.05) percentile bootstrap CI of one AUROC over the images: [lo, hi]."""
    y, s = np.asarray(y, dtype=np.float64), np.asarray(s, dtype=np.float64)
    counts = bootstrap_counts(len(y), n_boot, np.random.default_rng(seed))
    return _percentile(weighted_auroc(y, s, counts), alpha)


def mean_ci(x, n_boot: int = N_BOOT, alpha: float = ALPHA, seed: int = BOOT_SEED) -> list:
    """95 % (for alpha 0.05) percentile bootstrap CI of the mean of per-image values: [lo, hi]."""
    x = np.asarray(x, dtype=np.float64)
    counts = bootstrap_counts(len(x), n_boot, np.random.default_rng(seed))
    return _percentile(counts @ x / len(x), alpha)


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    known = ~np.isnan(y)
    return float(roc_auc_score(y[known].astype(int), s[known]))


# ----------------------------------------------------------------------------- eval results
def attach_uncertainty(result: dict, rows: np.ndarray, y_test: np.ndarray, scores: np.ndarray,
                       n_boot: int = N_BOOT, alpha: float = ALPHA, seed: int = BOOT_SEED) -> dict:
    """Add CIs to an eval result (in place; returns it) and keep its test scores for paired tests.

    ``rows`` int [n] (the test split's rows), ``y_test`` [n, L] (NaN = unknown), ``scores``
    [K, n, L] for the K entries of ``result["results"]`` in order. Adds ``auroc_ci`` and
    ``auroc_ci_per_label`` to every result, ``auroc_ci`` to every fraction of the summary,
    ``protocol.uncertainty``, and ``test_scores`` (inline; ``save_json`` moves it to a sidecar).
    """
    labels = list(result["labels"])
    y = np.asarray(y_test, dtype=np.float64).reshape(len(rows), len(labels))
    sc = np.asarray(scores, dtype=np.float64).reshape(len(result["results"]), len(rows), len(labels))
    counts = bootstrap_counts(len(rows), n_boot, np.random.default_rng(seed))
    macro = np.empty((len(sc), n_boot))
    for k, r in enumerate(result["results"]):
        macro[k] = _macro_replicates(y, sc[k], counts)
        r["auroc_ci"] = _percentile(macro[k], alpha)
        per = {}
        for j, name in enumerate(labels):
            known = ~np.isnan(y[:, j])
            per[name] = _percentile(weighted_auroc(y[known, j], sc[k][known, j], counts[:, known]), alpha)
        r["auroc_ci_per_label"] = per
        r["n_boot_valid"] = int(np.isfinite(macro[k]).sum())
    rng = np.random.default_rng([seed, 1])
    for key, summ in result.get("summary", {}).items():
        ks = [k for k, r in enumerate(result["results"]) if str(r["fraction"]) == key]
        summ["auroc_ci"] = _percentile(_seed_image_replicates(macro[ks], rng), alpha)
    level = round(100 * (1 - alpha))
    result.setdefault("protocol", {})["uncertainty"] = (
        f"{level}% percentile bootstrap, {n_boot} resamples of the test images (seed {seed}); "
        "per result: over test images (auroc_ci); summary: over test images and seeds")
    result["test_scores"] = {
        "rows": [int(v) for v in rows], "labels": labels,
        "y": _nan_to_none(y), "scores": _nan_to_none(sc.astype(np.float32)),
        "fraction": [float(r["fraction"]) for r in result["results"]],
        "seed": [int(r["seed"]) for r in result["results"]],
    }
    return result


def _seed_image_replicates(macro: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """macro [K, B] (seed k, image resample b) -> [B]: each b also resamples the K seeds."""
    k, b = macro.shape
    draw = rng.integers(0, k, size=(b, k))
    return np.nanmean(macro[draw, np.arange(b)[:, None]], axis=1) if k > 1 else macro[0]


def _nan_to_none(a: np.ndarray):
    return np.where(np.isnan(a), None, a.astype(object)).tolist() if a.size else a.tolist()


# ----------------------------------------------------------------------------- storage
def scores_path(json_path: str | os.PathLike) -> Path:
    """``eval/x.json`` -> ``eval/x.scores.npz`` (the sidecar of per-test-image scores)."""
    p = Path(json_path)
    return p.with_name(p.stem + ".scores.npz")


def _is_scores_npz(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {"rows", "y", "scores"} <= set(z.files)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return False


def check_scores_output(json_path: str | os.PathLike) -> Path:
    """One sentence unless the sidecar of ``json_path`` is new or a scores file cxrcl wrote."""
    path = scores_path(json_path)
    if path.exists() and not (path.is_file() and _is_scores_npz(path)):
        raise CxrclError(f"{path} exists and was not written by cxrcl (it would hold the test scores "
                         f"of {json_path}): choose another --out or move that file away")
    return path


def externalize_scores(result: dict, json_path: str | os.PathLike) -> dict:
    """A copy of ``result`` whose inline ``test_scores`` are written to the sidecar npz and
    replaced by ``{"file", "sha256", "n_test", "arrays"}`` (``result`` itself is unchanged)."""
    ts = result.get("test_scores")
    if not isinstance(ts, dict) or "scores" not in ts:
        return result
    from cxrcl.evaluation.outputs import write_npz

    path = check_scores_output(json_path)
    arrays = _arrays(ts)
    write_npz(path, **arrays)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    out = dict(result)
    out["test_scores"] = {"file": path.name, "sha256": sha, "n_test": int(len(arrays["rows"])),
                          "arrays": "rows [n] (data set rows of the test split), labels [L], "
                                    "y [n, L] (NaN = unknown), scores [K, n, L] float32 (one per "
                                    "entry of results), fraction [K], seed [K]"}
    return out


def _arrays(ts: dict) -> dict:
    y = np.array(ts["y"], dtype=np.float64)
    n, n_labels = len(ts["rows"]), len(ts["labels"])
    return {"rows": np.asarray(ts["rows"], dtype=np.int64),
            "labels": np.asarray(ts["labels"], dtype=str),
            "y": y.reshape(n, n_labels),
            "scores": np.array(ts["scores"], dtype=np.float32).reshape(-1, n, n_labels),
            "fraction": np.asarray(ts["fraction"], dtype=np.float64),
            "seed": np.asarray(ts["seed"], dtype=np.int64)}


def load_scores(result: dict | str | os.PathLike) -> tuple[dict, dict]:
    """``(result dict, arrays)`` of an eval result: a JSON path (its sidecar is read and checked
    against the JSON's sha256) or a result dict still holding inline scores."""
    if isinstance(result, dict):
        ts = result.get("test_scores")
        if not isinstance(ts, dict) or "scores" not in ts:
            raise CxrclError("this eval result carries no inline test scores: pass the path of its "
                             "JSON (the scores are in the .scores.npz beside it)")
        return result, _arrays(ts)
    path = Path(result)
    from cxrcl.evaluation.results import load_json

    obj = load_json(path)
    ts = obj.get("test_scores")
    if not isinstance(ts, dict):
        raise CxrclError(f"{path} has no per-image test scores (written before cxrcl kept them): "
                         "re-run its `cxrcl eval` for a paired test")
    if "scores" in ts:
        return obj, _arrays(ts)
    npz = path.parent / str(ts.get("file", ""))
    if not npz.is_file():
        raise CxrclError(f"{npz} not found: the paired test needs the test scores written beside "
                         f"{path}; keep the two files together or re-run its `cxrcl eval`")
    if ts.get("sha256") and hashlib.sha256(npz.read_bytes()).hexdigest() != ts["sha256"]:
        raise CxrclError(f"{npz} does not match {path} (another eval wrote it): re-run the eval "
                         "that wrote the JSON")
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return obj, arrays


# ----------------------------------------------------------------------------- paired test
def common_fractions(a, b) -> list[float]:
    """Label fractions both eval results hold (for a loop over :func:`paired_bootstrap`)."""
    (ra, _), (rb, _) = load_scores(a), load_scores(b)
    fa = {float(r["fraction"]) for r in ra["results"]}
    return sorted(fa & {float(r["fraction"]) for r in rb["results"]})


def paired_bootstrap(json_a, json_b, fraction: float | None = None, n_boot: int = N_BOOT,
                     alpha: float = ALPHA, seed: int = BOOT_SEED) -> dict:
    """Is macro AUROC(a) - AUROC(b) at ``fraction`` real? Both on the same test images.

    ``json_a``/``json_b``: eval JSON paths (or result dicts with inline scores). ``fraction``
    may be omitted when the two share exactly one. Returns ``{"diff", "ci", "p", "significant",
    "fraction", "labels", "seeds", "n_test", "n_boot", "n_boot_valid", "auroc_a", "auroc_b"}``;
    macro over the labels both hold, seeds paired by number (those both hold).
    """
    ra, xa = load_scores(json_a)
    rb, xb = load_scores(json_b)
    _check_pairable(ra, xa, rb, xb)
    shared = sorted({float(f) for f in xa["fraction"]} & {float(f) for f in xb["fraction"]})
    if fraction is None:
        if len(shared) != 1:
            raise CxrclError(f"the two results share label fractions {shared}: name one (fraction=...)")
        fraction = shared[0]
    fraction = float(fraction)
    if fraction not in shared:
        raise CxrclError(f"label fraction {fraction:g} is not in both results (shared: {shared})")
    labels_a = [str(v) for v in xa["labels"]]
    labels_b = [str(v) for v in xb["labels"]]
    labels = [name for name in labels_a if name in labels_b]
    if not labels:
        raise CxrclError(f"the two results have no label in common ({labels_a} vs {labels_b})")
    ja, jb = [labels_a.index(n) for n in labels], [labels_b.index(n) for n in labels]
    ka = {int(s): k for k, (f, s) in enumerate(zip(xa["fraction"], xa["seed"], strict=True)) if float(f) == fraction}
    kb = {int(s): k for k, (f, s) in enumerate(zip(xb["fraction"], xb["seed"], strict=True)) if float(f) == fraction}
    seeds = sorted(set(ka) & set(kb))
    if not seeds:
        raise CxrclError(f"no seed at fraction {fraction:g} is in both results ({sorted(ka)} vs {sorted(kb)})")
    y = np.asarray(xa["y"], dtype=np.float64)[:, ja]
    sa = [np.asarray(xa["scores"][ka[s]], dtype=np.float64)[:, ja] for s in seeds]
    sb = [np.asarray(xb["scores"][kb[s]], dtype=np.float64)[:, jb] for s in seeds]
    point_a = np.mean([np.mean([_auroc(y[:, j], s[:, j]) for j in range(len(labels))]) for s in sa])
    point_b = np.mean([np.mean([_auroc(y[:, j], s[:, j]) for j in range(len(labels))]) for s in sb])
    counts = bootstrap_counts(len(y), n_boot, np.random.default_rng(seed))
    d = np.stack([_macro_replicates(y, a, counts) - _macro_replicates(y, b, counts)
                  for a, b in zip(sa, sb, strict=True)])
    d = _seed_image_replicates(d, np.random.default_rng([seed, 2]))
    valid = d[np.isfinite(d)]
    ci = _percentile(d, alpha)
    n = len(valid)
    p = 1.0 if not n else min(1.0, 2 * min(((valid <= 0).sum() + 1) / (n + 1),
                                          ((valid >= 0).sum() + 1) / (n + 1)))
    significant = ci[0] is not None and (ci[0] > 0 or ci[1] < 0)
    return {"diff": float(point_a - point_b), "ci": ci, "p": float(p), "significant": bool(significant),
            "alpha": alpha, "fraction": fraction, "labels": labels, "seeds": seeds,
            "n_test": int(len(y)), "n_boot": int(n_boot), "n_boot_valid": int(n),
            "auroc_a": float(point_a), "auroc_b": float(point_b),
            "run_a": ra.get("run"), "run_b": rb.get("run")}


def _check_pairable(ra: dict, xa: dict, rb: dict, xb: dict) -> None:
    da, db = ra.get("data") or {}, rb.get("data") or {}
    for key in ("content_hash", "split_hash"):
        if da.get(key) and db.get(key) and da[key] != db[key]:
            raise CxrclError(f"the two results were evaluated on different data ({key} "
                             f"{da[key]} vs {db[key]}): a paired test needs the same test images")
    if not np.array_equal(np.asarray(xa["rows"]), np.asarray(xb["rows"])):
        raise CxrclError("the two results hold different test images: a paired test needs the same "
                         "test split of the same prepared data set")


def summarize_pairs(pairs: Sequence[dict]) -> str:
    """One line per paired result (for logs): 'a - b at f: +0.031 [0.012, 0.050], p=0.002 *'."""
    return "\n".join(f"{p['run_a']} - {p['run_b']} at {p['fraction']:g}: {p['diff']:+.3f} "
                     f"[{_fmt(p['ci'][0])}, {_fmt(p['ci'][1])}], p={p['p']:.3f}"
                     + (" *" if p["significant"] else " (n.s.)") for p in pairs)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:+.3f}"
