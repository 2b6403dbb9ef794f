"""Sections of ``cxrcl report`` that join several inputs: significance against the baseline,
the accuracy-versus-cost frontier, ROC curves and saliency overlays.

- Significance: :func:`cxrcl.evaluation.bootstrap.paired_bootstrap` between each run and the
  group's baseline (``--baseline``, default ``simclr``: the dense two-view method) on the same
  test images; it needs both results' per-image score sidecars (``FILE.scores.npz``). A result
  without one gets no mark, and the report says so.
- Cost: training GFLOPs of a run = its ``images_seen`` x the training GFLOPs per image of its
  method in a ``cxrcl bench`` JSON at the same backbone and image size (``train_gflops_per_step``
  / batch, else 3 x forward ``gflops_per_image``: backward ~ 2 forwards); wall seconds from the
  run's ``summary.json``. A point is on the frontier when no other run has a higher AUROC at a
  lower or equal cost.
- ROC curves from the sidecar scores (seed 0 or the first seed, largest fraction).
- Saliency: ``cxrcl explain`` output folders (``explain.json`` + ``overlays.png``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrcl.errors import CxrclError


# ----------------------------------------------------------------------------- identity of a run
def run_summary(run: str, known: dict[Path, dict]) -> dict | None:
    """The ``summary.json`` of the run an eval names (from the report's inputs, else on disk)."""
    p = Path(run)
    try:
        key = p.resolve()
    except OSError:
        return None
    if key in known:
        return known[key]
    f = p / "summary.json"
    if f.is_file():
        try:
            obj = json.loads(f.read_text())
        except (OSError, ValueError):
            return None
        return obj if isinstance(obj, dict) else None
    return None


def method_of(ev: dict, known: dict[Path, dict]) -> str:
    """The method behind an eval row: ``method`` in the JSON, the run's summary, or its folder name."""
    if isinstance(ev.get("method"), str):
        return ev["method"]
    run = str(ev.get("run", "?"))
    s = run_summary(run, known)
    if s and isinstance(s.get("method"), str):
        return s["method"]
    return Path(run).name or run


# ----------------------------------------------------------------------------- significance
def paired_against(path_a: Path, path_b: Path, fraction: float) -> dict | None:
    """The paired bootstrap of a - b at ``fraction``, or None when a sidecar is missing or the two
    results cannot be paired (different test images, fraction or seeds)."""
    from cxrcl.evaluation.bootstrap import paired_bootstrap

    try:
        return paired_bootstrap(path_a, path_b, fraction=fraction)
    except CxrclError:
        return None


# ----------------------------------------------------------------------------- cost frontier
@dataclass
class CostPoint:
    name: str
    auroc: float
    gflops: float | None
    wall_s: float | None
    note: str = ""


def _bench_entry(benches: list[tuple[Path, dict]], method: str, backbone, image_size):
    """(bench path, method measures, setup) for ``method`` at the run's backbone and size."""
    for path, b in benches:
        setup = b.get("setup") or {}
        if backbone and setup.get("backbone") and str(setup["backbone"]) != str(backbone):
            continue
        if image_size and setup.get("image_size") and int(setup["image_size"]) != int(image_size):
            continue
        methods = b["methods"]
        entry = methods.get(method) or next((m for k, m in methods.items() if k.split(":")[0] == method), None)
        if entry is not None:
            return path, entry, setup
    return None


def training_gflops(summary: dict, benches: list[tuple[Path, dict]]) -> tuple[float | None, str]:
    seen = summary.get("images_seen")
    hit = _bench_entry(benches, str(summary.get("method")), summary.get("backbone"), summary.get("image_size"))
    if hit is None or not isinstance(seen, (int, float)):
        return None, "no bench of this method at the run's backbone and image size"
    path, m, setup = hit
    per_step, batch = m.get("train_gflops_per_step"), setup.get("batch_size")
    if isinstance(per_step, (int, float)) and isinstance(batch, (int, float)) and batch:
        return float(per_step) / float(batch) * float(seen), f"{path.name}: train GFLOPs/step / batch"
    fwd = m.get("gflops_per_image")
    if isinstance(fwd, (int, float)):
        return 3.0 * float(fwd) * float(seen), f"{path.name}: 3 x forward GFLOPs/image"
    return None, f"{path.name} has no GFLOPs for this method"


def frontier(points: list[CostPoint], attr: str) -> list[CostPoint]:
    """Points no other point beats (higher AUROC at lower or equal cost), by increasing cost."""
    pts = sorted((p for p in points if getattr(p, attr) is not None), key=lambda p: (getattr(p, attr), -p.auroc))
    out, best = [], -np.inf
    for p in pts:
        if p.auroc > best:
            out.append(p)
            best = p.auroc
    return out


# ----------------------------------------------------------------------------- ROC curves
def roc_curves(path: Path) -> tuple[float, int, dict[str, tuple[np.ndarray, np.ndarray, float]]] | None:
    """(fraction, seed, {label: (fpr, tpr, auroc)}) at the largest fraction and first seed, from
    the eval's score sidecar; None without one."""
    from sklearn.metrics import roc_auc_score, roc_curve

    from cxrcl.evaluation.bootstrap import load_scores

    try:
        _, arr = load_scores(path)
    except CxrclError:
        return None
    fr = np.asarray(arr["fraction"], dtype=float)
    if not len(fr):
        return None
    f = float(fr.max())
    ks = np.flatnonzero(fr == f)
    k = ks[np.argmin(np.asarray(arr["seed"])[ks])]
    y, s = np.asarray(arr["y"], dtype=float), np.asarray(arr["scores"][k], dtype=float)
    out = {}
    for j, name in enumerate(str(v) for v in arr["labels"]):
        known = ~np.isnan(y[:, j])
        yj = y[known, j].astype(int)
        if len(np.unique(yj)) < 2:
            continue
        fpr, tpr, _ = roc_curve(yj, s[known, j])
        out[name] = (fpr, tpr, float(roc_auc_score(yj, s[known, j])))
    return f, int(np.asarray(arr["seed"])[k]), out


# ----------------------------------------------------------------------------- saliency
def is_explain_dir(path: Path) -> bool:
    return path.is_dir() and (path / "explain.json").is_file()


def load_explain(path: Path) -> dict:
    try:
        obj = json.loads((path / "explain.json").read_text())
    except (OSError, ValueError) as e:
        raise CxrclError(f"{path / 'explain.json'} cannot be read ({e}): re-run `cxrcl explain`") from None
    if not isinstance(obj, dict):
        raise CxrclError(f"{path / 'explain.json'} is not a JSON object: re-run `cxrcl explain`")
    return obj


def copy_overlay(path: Path, dest: Path) -> Path | None:
    src = path / "overlays.png"
    if not src.is_file():
        return None
    shutil.copyfile(src, dest)
    return dest
