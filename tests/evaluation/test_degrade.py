import numpy as np
import pytest

from cxrcl.data.degrade import degrade
from cxrcl.errors import CxrclError


def _images(n=24, size=48, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    base = 120 + 60 * np.sin(3 * xx) * np.cos(2 * yy)
    return np.clip(base[None] + rng.normal(0, 5, (n, size, size)), 0, 255).astype(np.uint8)


def _psnr(a, b):
    mse = ((a.astype(float) - b.astype(float)) ** 2).mean()
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def test_level0_is_identity():
    x = _images()
    y = degrade(x, 0, seed=3)
    assert y.dtype == np.uint8 and np.array_equal(x, y)
    assert y is not x


def test_shape_dtype_and_deterministic():
    x = _images()
    for level in (1, 2, 3):
        y = degrade(x, level, seed=1)
        assert y.shape == x.shape and y.dtype == np.uint8
        assert np.array_equal(y, degrade(x, level, seed=1))
        assert not np.array_equal(y, degrade(x, level, seed=2))


def test_independent_of_batching_with_positions():
    x = _images()
    full = degrade(x, 2, seed=0)
    part = degrade(x[5:11], 2, seed=0, positions=np.arange(5, 11))
    assert np.array_equal(full[5:11], part)
    assert np.array_equal(degrade(x[7], 2, seed=0, positions=np.array([7])), full[7])


def test_severity_monotone_in_psnr():
    x = _images()
    psnr = [_psnr(x, degrade(x, level, seed=0)) for level in (1, 2, 3)]
    assert psnr[0] > psnr[1] > psnr[2]
    assert psnr[0] < 35  # level 1 is a visible change


def test_bad_level_and_input():
    with pytest.raises(CxrclError):
        degrade(_images(), 4, 0)
    with pytest.raises(ValueError):
        degrade(_images().astype(np.float32), 1, 0)


def test_components_alone_and_combined():
    from cxrcl.data.degrade import COMPONENTS

    x = _images()
    full = degrade(x, 2, seed=0)
    assert np.array_equal(degrade(x, 2, seed=0, components=COMPONENTS), full)
    for kind in COMPONENTS:
        alone = degrade(x, 2, seed=0, components=[kind])
        assert not np.array_equal(alone, x), kind
        assert _psnr(x, alone) > _psnr(x, full), kind  # one defect is milder than all of them
    with pytest.raises(ValueError):
        degrade(x, 1, 0, components=["fog"])


def test_training_views_use_the_evaluation_definition():
    """degrade_batch (CoMCL's low-quality views) = degrade on the uint8 images, per level."""
    import torch

    from cxrcl.data.degrade import COMPONENTS, degrade_batch
    from cxrcl.data.normalize import to_model_input, to_uint8

    x = to_model_input(_images(n=6, size=32))
    levels = torch.tensor([1, 2, 3, 3, 0, 2])
    out = degrade_batch(x, levels, torch.Generator().manual_seed(4), single_component_p=0.0)
    g = torch.Generator().manual_seed(4)  # replay the draws: choice, kind, then the seed
    torch.rand(6, generator=g)
    torch.randint(len(COMPONENTS), (6,), generator=g)
    seed = int(torch.randint(2 ** 31 - 1, (1,), generator=g))
    u8 = to_uint8(x).numpy()
    for i, level in enumerate(levels.tolist()):
        ref = degrade(u8[i:i + 1], level, seed, positions=np.array([i]))
        assert np.array_equal(to_uint8(out[i:i + 1]).numpy(), ref), i
    assert torch.equal(out[4], to_model_input(u8[4:5])[0])  # level 0 = unchanged
