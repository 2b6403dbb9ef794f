import pytest
import torch

from cxrcl.data.views import (
    AugmentConfig,
    augment,
    block_partition,
    partition_sizes,
    random_partition,
)


@pytest.mark.parametrize("ratios", [(0.5, 0.5), (0.4, 0.4), (0.3, 0.7)])
def test_random_partition_disjoint_sizes_and_cover(ratios):
    g = torch.Generator().manual_seed(0)
    n = 64
    views = random_partition(8, n, ratios, g)
    sizes = partition_sizes(n, ratios)
    for v, s in zip(views, sizes, strict=True):
        assert v.shape == (8, s)
    for i in range(8):
        a, b = set(views[0][i].tolist()), set(views[1][i].tolist())
        assert not a & b, "views overlap"
        assert len(a) == sizes[0] and len(b) == sizes[1], "duplicate tokens in a view"
        if sum(ratios) == 1:
            assert a | b == set(range(n)), "views do not cover the image"
    # different images get different partitions
    assert not torch.equal(views[0][0].sort().values, views[0][1].sort().values)


def test_block_partition_is_spatial_disjoint_and_covers():
    g = torch.Generator().manual_seed(0)
    v1, v2 = block_partition(4, (8, 8), 2, (0.5, 0.5), g)
    assert v1.shape == v2.shape == (4, 32)
    for i in range(4):
        a, b = set(v1[i].tolist()), set(v2[i].tolist())
        assert not a & b and a | b == set(range(64))
        # every 2x2 block lies wholly in one view
        for r in range(0, 8, 2):
            for c in range(0, 8, 2):
                cells = {r * 8 + c, r * 8 + c + 1, (r + 1) * 8 + c, (r + 1) * 8 + c + 1}
                assert cells <= a or cells <= b


def test_bad_ratios():
    with pytest.raises(ValueError):
        partition_sizes(64, (0.6, 0.6))


def test_augment_is_seeded_and_changes_images():
    x = torch.randn(4, 1, 32, 32)
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    c = augment(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.allclose(a, c) and a.shape == x.shape
    assert torch.isfinite(a).all()


def test_augment_never_flips():
    """A left-bright image stays left-bright: no horizontal flips (the heart's side is anatomy)."""
    x = torch.full((16, 1, 32, 32), -1.0)
    x[..., :10] = 1.0
    cfg = AugmentConfig(brightness=0, contrast=(1, 1), gamma=(1, 1), blur_p=0, noise_std=(0, 0))
    y = augment(x, torch.Generator().manual_seed(0), cfg)
    assert (y[..., :8].mean(dim=(1, 2, 3)) > y[..., -8:].mean(dim=(1, 2, 3))).all()


@pytest.mark.parametrize("n,ratios,expected", [(49, (0.5, 0.5), [25, 24]), (9, (0.5, 0.5), [5, 4]),
                                               (7, (0.3, 0.7), [2, 5]), (25, (0.2, 0.8), [5, 20]),
                                               (3, (1 / 3, 1 / 3, 1 / 3), [1, 1, 1])])
def test_odd_token_counts_are_covered_when_ratios_sum_to_one(n, ratios, expected):
    assert partition_sizes(n, ratios) == expected
    views = random_partition(4, n, ratios, torch.Generator().manual_seed(1))
    for i in range(4):
        assert sorted(torch.cat([v[i] for v in views]).tolist()) == list(range(n))


def test_odd_block_counts_are_covered():
    # a 6x6 grid in 2x2 blocks: 9 blocks, dealt 5 + 4 at 0.5/0.5
    views = block_partition(2, (6, 6), 2, (0.5, 0.5), torch.Generator().manual_seed(0))
    assert [v.shape[1] for v in views] == [20, 16]
    assert sorted(torch.cat([views[0][0], views[1][0]]).tolist()) == list(range(36))
