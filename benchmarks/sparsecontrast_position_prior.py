"""How much of the phantom's lesion coverage could a fixed, position-only keep set reach?

No model: on the train split, count how much lesion-mask area falls in each token position
(16 px tokens = the 4x4 grid of the ``sc05`` run, 8 px = 8x8); keep the half of the positions
with the most lesion area, the SAME set for every image; then measure ``lesion_area_kept``
(``cxrcl.evaluation.explain.area_kept``, as ``cxrcl explain``) on the val and test splits, with
``random_area_kept`` beside it. Also the complement (the half with the least lesion area): a keep
set that prefers the corners and the body outline, as the trained predictor's maps do. It tells
whether the bar (lesion >= random + 0.2) needs image content at all, and how far a positional
preference in the wrong direction falls below random.
Writes benchmarks/results/sparsecontrast/position_prior.json.
Usage: .venv/bin/python benchmarks/sparsecontrast_position_prior.py [PHANTOM64]
       (default .bench-data/sc/phantom64, `cxrcl data phantom DIR --n 1024 --size 64`; seconds)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from cxrcl.data.prepared import PreparedDataset
from cxrcl.evaluation.explain import area_kept, random_area_kept

OUT = Path(__file__).parent / "results" / "sparsecontrast" / "position_prior.json"


def token_area(masks: np.ndarray, grid: int) -> np.ndarray:
    """Lesion pixels per token position, summed over images [grid * grid]."""
    n, s, _ = masks.shape
    p = s // grid
    m = (masks > 0).reshape(n, grid, p, grid, p).sum((2, 4))
    return m.reshape(n, -1).sum(0)


def score(ds: PreparedDataset, split: str, kept: np.ndarray, grid: int) -> dict:
    rows = ds.indices(split)
    masks = np.asarray(ds.masks[rows])
    masks = masks[masks.reshape(len(rows), -1).any(1)]
    rng = np.random.default_rng(0)
    lesion = [area_kept(m, kept, (grid, grid)) for m in masks]
    rand = [random_area_kept(m, int(kept.sum()), (grid, grid), rng, 10) for m in masks]
    return {"lesion_area_kept": float(np.mean(lesion)), "random_area_kept": float(np.mean(rand)),
            "n_images_with_masks": len(masks)}


def main(path: str) -> None:
    ds = PreparedDataset.open(path)
    train = np.asarray(ds.masks[ds.indices("train")])
    result = {"data": path, "keep_ratio": 0.5, "variants": {}}
    for grid in (4, 8):
        area = token_area(train, grid)
        order = np.argsort(-area, kind="stable")
        for name, chosen in (("most_lesion_half", order[: grid * grid // 2]),
                             ("least_lesion_half", order[grid * grid // 2:])):
            kept = np.zeros(grid * grid, dtype=bool)
            kept[chosen] = True
            key = f"{name}_{grid}x{grid}"
            result["variants"][key] = {
                "kept_positions": kept.reshape(grid, grid).astype(int).tolist(),
                "train_lesion_share": float(area[chosen].sum() / area.sum()),
                **{split: score(ds, split, kept, grid) for split in ("val", "test")}}
            v = result["variants"][key]
            print(f"{key}: val {v['val']['lesion_area_kept']:.3f} vs random {v['val']['random_area_kept']:.3f}; "
                  f"test {v['test']['lesion_area_kept']:.3f} vs {v['test']['random_area_kept']:.3f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".bench-data/sc/phantom64")
