import numpy as np
import pytest

from cxrcl.errors import CxrclError
from cxrcl.evaluation.fractions import (
    _required_count,
    parse_fractions,
    sample_label_fraction,
    sample_order,
    seed_list,
    stratified_order,
)


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


def _strata(y):
    codes = np.where(np.isnan(y), 2, y).astype(np.int8)
    return np.unique(codes, axis=0, return_inverse=True)[1].reshape(-1)


@pytest.mark.parametrize("seed", [0, 3, 7])
def test_every_prefix_holds_each_stratum_within_the_documented_bound(seed):
    """The module docstring: every prefix of k rows of the stratified order holds each stratum
    (size m, K strata, N rows) within 1 + K * m / N rows of its proportional share k * m / N."""
    y = _labels(n=5000)
    rng = np.random.default_rng(seed)
    order = stratified_order(y, rng.permutation(len(y)), rng)
    stratum = _strata(y)[order]
    m = np.bincount(stratum).astype(float)
    n_rows, k_strata = len(order), int((m > 0).sum())
    bound = 1 + k_strata * m / n_rows
    counts = np.zeros_like(m)
    worst_rare = 0.0
    for k, s in enumerate(stratum, start=1):
        counts[s] += 1
        dev = np.abs(counts - k * m / n_rows)
        assert (dev <= bound + 1e-9).all(), (k, dev.max())
        worst_rare = max(worst_rare, dev[m < n_rows / k_strata].max())
    assert worst_rare < 2.0  # "about one row for the rare patterns"


def test_order_is_guaranteed_rows_then_the_stratified_rest():
    y = _labels()
    order = sample_order(y, 5)
    assert np.array_equal(np.sort(order), np.arange(len(y)))
    n_req = _required_count(y, order)
    assert n_req <= 2 * y.shape[1]
    head = y[order[:n_req]]
    assert ((head == 1).any(0) & (head == 0).any(0)).all()


def test_stratified_positive_rate():
    y = _labels(n=5000)
    s = sample_label_fraction(y, 0.1, seed=3)
    # 500 rows: each label's positive and unknown counts are sums of strata, so they stay within
    # the sum of the strata bounds of the share of the full train split (here < 1 point)
    assert np.allclose(np.nanmean(y[s], 0), np.nanmean(y, 0), atol=0.01)
    assert np.allclose(np.isnan(y[s]).mean(0), np.isnan(y).mean(0), atol=0.01)


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
