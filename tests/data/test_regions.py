"""Region sources (mask, box, saliency) and the lesion/healthy patch placement."""

import json

import numpy as np
import pytest
import torch

from cxrcl.data.prepared import PreparedDataset
from cxrcl.data.regions import GRID, coverage, crop_patches, place_patches, region_source
from cxrcl.errors import CxrclError
from cxrcl.training.fit import pretrain
from tests.conftest import TINY_VIT


def test_patches_cover_the_lesion_or_avoid_it():
    lesion = torch.zeros(3, 32, 32)
    lesion[0, 0:8, 0:8] = 1          # top-left lesion
    lesion[1, 20:28, 12:20] = 1      # lower middle
    # image 2 has no lesion: both patches are drawn uniformly
    for seed in range(5):
        les, hea, cells = place_patches(lesion, 0.5, torch.Generator().manual_seed(seed))
        cov = coverage(lesion, cells)
        r = torch.arange(3)
        assert (cov[r[:2], les[:2, 0], les[:2, 1]] > 0).all()
        assert (cov[r, hea[:, 0], hea[:, 1]] == 0).all()
    assert cells == GRID // 2


def test_crop_takes_the_named_cells():
    x = torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32)
    out = crop_patches(x, torch.tensor([[8, 4]]), 8)  # rows 16:32, cols 8:24, upsampled 2x
    small = torch.nn.functional.avg_pool2d(out, 2)[..., 1:-1, 1:-1]  # the edge pixel is clamped
    torch.testing.assert_close(small, x[:, :, 17:31, 9:23], atol=1.0, rtol=0)


def test_mask_and_box_sources_on_the_phantom(tmp_path):
    from cxrcl.data.phantom import make_phantom

    make_phantom(tmp_path / "ph", n=24, size=32, seed=0)
    ds = PreparedDataset.open(tmp_path / "ph")
    rows = np.array([3, 0, 7, 11])
    x = torch.zeros(4, 1, 32, 32)
    masks = region_source("mask", ds).maps(x, rows)
    torch.testing.assert_close(masks, torch.from_numpy(np.asarray(ds.masks[rows])).float())
    boxes = region_source("box", ds).maps(x, rows)
    assert ((masks > 0) <= (boxes > 0)).all()  # every mask pixel lies in a box
    for i, r in enumerate(rows):
        assert bool(boxes[i].any()) == bool(json.loads(ds.meta["lesion_boxes"][r] or "[]"))
    with pytest.raises(CxrclError, match="set_batch_rows"):
        region_source("mask", ds).maps(x, None)


def test_unknown_sources_and_missing_inputs(tiny_ds):
    with pytest.raises(CxrclError, match="unknown region source"):
        region_source("detector", tiny_ds)
    with pytest.raises(CxrclError, match="no masks.npy"):
        region_source("mask", tiny_ds)
    with pytest.raises(CxrclError, match="lesion_boxes"):
        region_source("box", tiny_ds)
    with pytest.raises(CxrclError, match="region_run"):
        region_source("saliency", tiny_ds, run="")


@pytest.mark.slow
def test_saliency_of_a_trained_run(tiny_ds, tmp_path):
    run = tmp_path / "run"
    pretrain("simclr", tiny_ds.root, run, backbone=TINY_VIT, image_size=32,
             train_overrides=dict(steps=2, batch_size=16, progress=False))
    src = region_source("saliency", run=str(run), quantile=0.75)
    x = torch.randn(5, 1, 32, 32)
    maps = src.maps(x, None)
    assert maps.shape == (5, 32, 32) and set(maps.unique().tolist()) <= {0.0, 1.0}
    frac = maps.mean(dim=(1, 2))
    assert ((frac >= 0.2) & (frac <= 0.35)).all()  # the top quarter of 16 tokens
