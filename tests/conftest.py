"""Shared fixtures: a tiny prepared data set, and the path of the real data (../shared/data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrcl.data.splits import assign_patient_splits
from cxrcl.data.writer import write_prepared

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TINY_VIT = "vit_tiny_patch16_224:patch_size=8:depth=2"


def shared_data(name: str) -> Path:
    """Path of a real data set beside the repo, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not found: real-data tests need ../shared/data beside the repository")
    return path


def make_tiny(path: Path, n: int = 160, size: int = 32, seed: int = 0):
    """Noise images; label ``bright`` = a bright square in the upper left (learnable)."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(40, 120, (n, size, size), dtype=np.uint8)
    label = rng.integers(0, 2, n)
    imgs[label == 1, : size // 3, : size // 3] = 230
    meta = pd.DataFrame({"id": [f"img{i:04d}" for i in range(n)],
                         "patient_id": [f"p{i // 2}" for i in range(n)], "label_bright": label})
    meta["split"] = assign_patient_splits(meta["patient_id"], seed=seed)
    return write_prepared(path, imgs, meta, source="test", split_seed=seed)


@pytest.fixture(scope="session")
def tiny_ds(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("data") / "tiny")
