"""Would positional atypicality find the phantom's lesions? (no training; val split)

For each val image of the phantom, tokens = 8 or 16 px patches of the per-image standardised
(or raw) pixels; atypicality = mean absolute or squared z-score against the train split's
per-position mean and std; keep the top half; measure the fraction of the lesion mask inside the
kept tokens (as ``cxrcl explain``'s lesion_area_kept). Writes
benchmarks/results/sparsecontrast/rarity_oracle.json.
Usage: .venv/bin/python benchmarks/sparsecontrast_rarity_oracle.py [PHANTOM64]
       (default .bench-data/sc/phantom64, made by benchmarks/sparsecontrast_lesions.sh; seconds)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from cxrcl.data.prepared import PreparedDataset
from cxrcl.evaluation.explain import area_kept

OUT = Path(__file__).parent / "results" / "sparsecontrast" / "rarity_oracle.json"


def tokens(a: np.ndarray, p: int, standardise: bool) -> np.ndarray:
    if standardise:
        a = (a - a.mean((1, 2), keepdims=True)) / a.std((1, 2), keepdims=True)
    n, s, _ = a.shape
    g = s // p
    return a.reshape(n, g, p, g, p).transpose(0, 1, 3, 2, 4).reshape(n, g * g, p * p)


def main(path: str) -> None:
    ds = PreparedDataset.open(path)
    train = np.asarray(ds.images[ds.indices("train")], dtype=np.float32) / 255
    rows = ds.indices("val")
    val = np.asarray(ds.images[rows], dtype=np.float32) / 255
    masks = np.asarray(ds.masks[rows])
    lesion = masks.reshape(len(rows), -1).any(1)
    out = []
    for p in (16, 8):
        g = ds.size // p
        for standardise in (False, True):
            t = tokens(train, p, standardise)
            mu, sd = t.mean(0), t.std(0) + 1e-3
            z = (tokens(val, p, standardise) - mu) / sd
            for kind, score in (("abs", np.abs(z).mean(-1)), ("squared", (z ** 2).mean(-1))):
                kept = np.zeros_like(score, dtype=bool)
                np.put_along_axis(kept, np.argsort(-score, 1)[:, :g * g // 2], True, 1)
                vals = [area_kept(masks[i], kept[i], (g, g)) for i in np.flatnonzero(lesion)]
                out.append({"patch": p, "standardised": standardise, "score": kind,
                            "lesion_area_kept": float(np.mean(vals))})
    result = {"data": str(ds.root), "split": "val", "keep_ratio": 0.5, "n_images_with_masks": int(lesion.sum()),
              "random_area_kept_expected": 0.5, "variants": out}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    for r in out:
        print(r)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".bench-data/sc/phantom64")
