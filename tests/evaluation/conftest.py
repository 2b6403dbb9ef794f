"""Synthetic prepared data sets whose labels are visible in the pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrcl.data.writer import write_prepared


def make_visible_dataset(out, n: int = 400, size: int = 32, seed: int = 0, nan_rate: float = 0.1):
    """Label ``square``: a bright 10x10 square at a random place; label ``bar``: a dark vertical
    bar at a fixed column. Splits by row number: 60 % train, 20 % val, 20 % test."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(90, 100, n)[:, None, None] + rng.normal(0, 6, (n, size, size))
    sq = rng.random(n) < 0.4
    bar = rng.random(n) < 0.3
    for i in np.flatnonzero(sq):
        y, x = rng.integers(0, size - 10, 2)
        base[i, y:y + 10, x:x + 10] += 80
    base[bar, :, 3:6] -= 50
    images = np.clip(base, 0, 255).astype(np.uint8)
    split = np.array(["train"] * 6 + ["val"] * 2 + ["test"] * 2)[np.arange(n) % 10]
    lab_sq = sq.astype(float)
    lab_bar = bar.astype(float)
    lab_sq[rng.random(n) < nan_rate] = np.nan
    lab_bar[rng.random(n) < nan_rate] = np.nan
    meta = pd.DataFrame({"id": [f"img{i:04d}" for i in range(n)],
                         "patient_id": [f"p{i:04d}" for i in range(n)],
                         "split": split, "label_square": lab_sq, "label_bar": lab_bar})
    return write_prepared(out, images, meta, source="synthetic", label_names=["square", "bar"])


def pixel_extractor(images: np.ndarray) -> np.ndarray:
    """Mean-pooled 4x4 blocks of raw pixels: sees both labels linearly."""
    x = np.asarray(images, dtype=np.float32) / 255.0
    n, h, w = x.shape
    return x.reshape(n, h // 4, 4, w // 4, 4).mean(axis=(2, 4)).reshape(n, -1)


class RandomExtractor:
    """Features independent of the image content (a fixed stream of noise)."""

    def __init__(self, dim: int = 16, seed: int = 123):
        self.rng = np.random.default_rng(seed)
        self.dim = dim

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.rng.standard_normal((len(images), self.dim)).astype(np.float32)


@pytest.fixture(scope="session")
def visible_ds(tmp_path_factory):
    return make_visible_dataset(tmp_path_factory.mktemp("data") / "visible")
