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
