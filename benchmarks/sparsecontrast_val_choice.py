"""Choose a SparseContrast variant on covid_radiography's VAL split at 1 % of the labels.

The protocol's val score at 1 % rests on 14 matched val images per draw, too few to choose
with. Here each run is probed as the protocol does (1 % of the train labels, C chosen on the
matched 1 % of the val labels), but scored on the REST of the val split (about 1,350 images the
probe never saw) over ``--seeds`` label samples (default 20; sample s is the same images for
every run, so differences are paired). The test split is never read.

A run is a directory name under .bench-data/sc/real_runs; ``NAME@keep=R`` evaluates that run's
SparseEncoder at keep ratio R instead of its own (e.g. ``@keep=1.0``: trained sparse, inferred
dense). The first run is the reference the others are compared with.

Usage: .venv/bin/python benchmarks/sparsecontrast_val_choice.py --out NAME RUN [RUN ...]
Writes benchmarks/results/sparsecontrast/real/val_choice_<NAME>.json (features cached in
.bench-data/sc/val_features/).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from cxrcl.data.prepared import PreparedDataset
from cxrcl.encoders import load_encoder
from cxrcl.errors import CxrclError
from cxrcl.evaluation.features import extract_splits
from cxrcl.evaluation.fractions import sample_label_fraction
from cxrcl.evaluation.linear import fit_predict_logistic

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / ".bench-data/sc/real_runs"
DATA = ROOT / ".bench-data/sc/covrad64"
CACHE = ROOT / ".bench-data/sc/val_features"
OUT = ROOT / "benchmarks/results/sparsecontrast/real"
LABEL = "covid19"


def features(spec: str, ds: PreparedDataset) -> dict[str, np.ndarray]:
    """Train and val features of ``spec`` (cached: runs are never re-trained under a name)."""
    path = CACHE / f"{spec.replace('@', '__').replace('=', '_')}.npz"
    if path.exists():
        return dict(np.load(path))
    name, _, keep = spec.partition("@keep=")
    try:
        enc = load_encoder(RUNS / name, device="cpu")
    except CxrclError as e:
        raise SystemExit(f"{name}: {e}") from None
    if keep:
        if not hasattr(enc.backbone, "keep_ratio"):
            raise SystemExit(f"{name} is not a SparseContrast run: @keep= needs one")
        enc.backbone.keep_ratio = float(keep)
    feats = extract_splits(ds, enc, splits=("train", "val"))
    out = {"train": feats["train"][0], "val": feats["val"][0]}
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def val_scores(f: dict[str, np.ndarray], ytr: np.ndarray, yva: np.ndarray, fraction: float,
               seeds: int) -> list[float]:
    """Held-out val AUROC per label sample (C chosen on the matched val sample, as the protocol)."""
    out = []
    for s in range(seeds):
        tr = sample_label_fraction(ytr, fraction, s)
        mv = sample_label_fraction(yva, fraction, s)
        rest = np.setdiff1d(np.arange(len(yva)), mv)
        scores, _ = fit_predict_logistic(f["train"][tr], ytr[tr].astype(int), f["val"][mv],
                                         yva[mv].astype(int), f["val"][rest])
        out.append(float(roc_auc_score(yva[rest].astype(int), scores)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run names (the first is the reference); NAME@keep=R")
    ap.add_argument("--out", required=True, help="name of the result JSON")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--fraction", type=float, default=0.01)
    a = ap.parse_args()
    if not a.out or "/" in a.out:
        ap.error(f"--out {a.out!r}: a plain name, written as {OUT.relative_to(ROOT)}/val_choice_NAME.json")
    ds = PreparedDataset.open(DATA)
    ytr = ds.labels([LABEL], ds.indices("train"))[:, 0]
    yva = ds.labels([LABEL], ds.indices("val"))[:, 0]
    auc = {r: val_scores(features(r, ds), ytr, yva, a.fraction, a.seeds) for r in a.runs}
    ref = np.array(auc[a.runs[0]])
    rng = np.random.default_rng(0)
    rows = []
    for r in a.runs:
        d = np.array(auc[r]) - ref
        boot = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(2000)]
        rows.append({"run": r, "val_auroc_mean": float(np.mean(auc[r])),
                     "minus_reference": float(d.mean()),
                     "minus_reference_ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
                     "val_auroc_per_label_seed": auc[r]})
        print(f"{r:60s} {np.mean(auc[r]):.4f}  {d.mean():+.4f}")
    result = {"what": f"linear probe, {LABEL}, {a.fraction:.0%} of the train labels, C on the matched "
                      "val sample, AUROC on the rest of the val split (test never read)",
              "data": str(DATA.relative_to(ROOT)), "label_seeds": a.seeds, "reference": a.runs[0],
              "runs": rows,
              "command": f"python benchmarks/sparsecontrast_val_choice.py --out {a.out} --seeds {a.seeds} "
                         + " ".join(a.runs)}
    path = OUT / f"val_choice_{a.out}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
