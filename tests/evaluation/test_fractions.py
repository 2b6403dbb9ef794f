import numpy as np
import pytest

from cxrcl.errors import CxrclError
from cxrcl.evaluation.fractions import parse_fractions, sample_label_fraction, seed_list


def _labels(n=1000, seed=1):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < [0.03, 0.3, 0.5]).astype(np.float32)
    y[rng.random((n, 3)) < 0.2] = np.nan
    return y


def test_deterministic_and_seed_dependent():
    y = _labels()
    a = sample_label_fraction(y, 0.1, seed=0)
    assert np.array_equal(a, sample_label_fraction(y.copy(), 0.1, seed=0))
    assert not np.array_equal(a, sample_label_fraction(y, 0.1, seed=1))
    assert np.all(np.diff(a) > 0)  # sorted, unique


@pytest.mark.parametrize("fraction", [0.0005, 0.01, 0.1, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_size_and_one_positive_one_negative_per_label(fraction, seed):
    y = _labels()
    s = sample_label_fraction(y, fraction, seed)
    assert len(s) >= int(np.ceil(fraction * len(y)))
    assert len(s) <= max(int(np.ceil(fraction * len(y))), 2 * y.shape[1])
    assert ((y[s] == 1).sum(0) >= 1).all() and ((y[s] == 0).sum(0) >= 1).all()


def test_stratified_positive_rate():
    y = _labels(n=5000)
    s = sample_label_fraction(y, 0.1, seed=3)
    # every label's positive rate (among known) within 1.5 points of the full train split
    assert np.allclose(np.nanmean(y[s], 0), np.nanmean(y, 0), atol=0.015)
    assert np.allclose(np.isnan(y[s]).mean(0), np.isnan(y).mean(0), atol=0.015)


def test_nested_and_full():
    y = _labels()
    small, mid, full = (sample_label_fraction(y, f, seed=4) for f in (0.01, 0.1, 1.0))
    assert len(small) < len(mid) < len(full) == len(y)
    assert np.isin(small, mid).all()
    assert np.array_equal(full, np.arange(len(y)))


def test_depends_on_labels_only_not_on_features():
    # same label matrix -> same rows, whatever else differs (the sampler never sees features)
    y = _labels()
    assert np.array_equal(sample_label_fraction(y, 0.05, 7), sample_label_fraction(y.astype(np.float64), 0.05, 7))


def test_single_label_vector_and_rare_positive():
    y = np.zeros(500, np.float32)
    y[123] = 1
    s = sample_label_fraction(y, 0.01, 0)
    assert 123 in s and len(s) == 5


def test_bad_fractions_and_seeds():
    with pytest.raises(CxrclError):
        sample_label_fraction(_labels(), 0.0, 0)
    with pytest.raises(CxrclError):
        parse_fractions("0.1,2")
    with pytest.raises(CxrclError):
        parse_fractions("a,b")
    assert parse_fractions("1.0,0.01,0.1,0.1") == (0.01, 0.1, 1.0)
    assert seed_list(3) == [0, 1, 2] and seed_list([5, 9]) == [5, 9]
    with pytest.raises(CxrclError):
        seed_list(0)
