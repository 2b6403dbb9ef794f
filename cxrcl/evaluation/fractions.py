"""Label-fraction sampling: which labelled training images a probe may use at 1 %, 10 %, 100 %.

Protocol (EVALUATION.md): the sample is drawn from the train split, stratified per label, with
at least one positive and one negative per label, and is a pure function of (label matrix,
fraction, seed): it never depends on the encoder, so every method sees the same labelled images.

Our choices:

- Size: ``n = max(ceil(fraction * N), |R|)`` where R is the guaranteed set below (at most
  2 L rows for L labels); fraction 1.0 returns every row.
- Guarantee: for every label, the first known positive and the first known negative in a
  seed-dependent random order are always included (the set R, listed first; the stratified
  order below is of the other rows).
- Stratification: rows are grouped by their full label pattern (1 / 0 / unknown per label); the
  remaining rows (N of them, in K strata) are ordered by systematic sampling within strata (the
  r-th row of a stratum of size m, in random order, gets key (r + u_stratum) / m, u uniform in
  [0, 1)). A prefix of k rows is every row whose key is below some threshold t, so it holds
  within one row of t * m of each stratum; the counts add up to k, so t is within K / N of k / N,
  and each stratum's count is within 1 + K * m / N rows of its proportional share k * m / N: about
  one row for the rare patterns, a few rows for the large ones (tested). Label positive rates
  follow, as sums of strata. (Exactly one row for every stratum and every prefix would need a
  quota sequence such as Tijdeman's; we do not use one.)
- Nesting: the order depends on the seed only, not on the fraction, so for a given seed the 1 %
  sample is a subset of the 10 % sample, which is a subset of 100 %.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cxrcl.errors import CxrclError

DEFAULT_FRACTIONS = (0.01, 0.1, 1.0)


def sample_label_fraction(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted row positions (into ``labels``) of the labelled sample for (fraction, seed).

    ``labels`` is float [N, L] with 1, 0 and NaN for unknown (or [N] for one label).

    >>> y = ds.labels(["pneumonia"], ds.indices("train"))
    >>> pos = sample_label_fraction(y, 0.01, seed=0)      # positions into the train rows
    """
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValueError(f"labels must be [N, L], got shape {y.shape}")
    fraction = check_fraction(fraction)
    n_rows = len(y)
    if fraction >= 1.0 or n_rows == 0:
        return np.arange(n_rows)
    order = sample_order(y, seed)
    n_required = _required_count(y, order)
    n = max(math.ceil(fraction * n_rows - 1e-9), n_required, 1)
    return np.sort(order[:n])


def sample_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """The seed's full priority order of rows: guaranteed rows first, then stratified fill.

    Every sample for this seed is a prefix of this order (hence nested across fractions).
    """
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    n_rows = len(y)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xF7AC])
    perm = rng.permutation(n_rows)
    rank = np.empty(n_rows, dtype=np.int64)
    rank[perm] = np.arange(n_rows)
    required = guaranteed_rows(y, perm)
    others = np.setdiff1d(np.arange(n_rows), required)
    return np.concatenate([required, others[stratified_order(y[others], rank[others], rng)]])


def guaranteed_rows(y: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """The first known positive and first known negative of every label in ``perm`` order
    (distinct rows, in that order)."""
    rank = np.empty(len(y), dtype=np.int64)
    rank[perm] = np.arange(len(y))
    required: list[int] = []
    for j in range(y.shape[1]):
        col = y[perm, j]
        for value in (1.0, 0.0):
            hit = np.flatnonzero(col == value)
            if len(hit):
                row = int(perm[hit[0]])
                if row not in required:
                    required.append(row)
    return np.array(sorted(required, key=lambda r: rank[r]), dtype=np.int64)


def stratified_order(y: np.ndarray, rank: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``y``'s rows in systematic-sampling order within strata (label patterns, NaN
    coded as 2): the r-th row of a stratum of size m (in ``rank`` order) gets key (r + u) / m with
    one uniform u per stratum; rows by key, ties by rank (the bound is in the module docstring)."""
    n_rows = len(y)
    if n_rows == 0:
        return np.arange(0)
    codes = np.where(np.isnan(y), 2, y).astype(np.int8)
    _, stratum = np.unique(codes, axis=0, return_inverse=True)
    stratum = stratum.reshape(-1)
    n_strata = int(stratum.max()) + 1
    offset = rng.random(n_strata)
    sizes = np.bincount(stratum, minlength=n_strata)
    by_stratum = np.lexsort((rank, stratum))  # rank within stratum, following rank
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    within = np.empty(n_rows, dtype=np.int64)
    within[by_stratum] = np.arange(n_rows) - starts[stratum[by_stratum]]
    key = (within + offset[stratum]) / sizes[stratum]
    return np.lexsort((rank, key))


def _required_count(y: np.ndarray, order: np.ndarray) -> int:
    """Length of the guaranteed prefix of ``order`` (rows needed for one positive and one negative
    per label, where the label has them)."""
    need = set()
    for j in range(y.shape[1]):
        for value in (1.0, 0.0):
            if (y[:, j] == value).any():
                need.add((j, value))
    have: set = set()
    for i, row in enumerate(order):
        for j in range(y.shape[1]):
            v = y[row, j]
            if not np.isnan(v):
                have.add((j, float(v)))
        if need <= have:
            return i + 1
    return len(order)


def check_fraction(fraction: float) -> float:
    f = float(fraction)
    if not (0.0 < f <= 1.0) or math.isnan(f):
        raise CxrclError(f"label fraction {fraction} must be in (0, 1], e.g. --fractions 0.01,0.1,1.0")
    return f


def parse_fractions(spec: str | Sequence[float]) -> tuple[float, ...]:
    """``"0.01,0.1,1.0"`` (or a sequence) -> validated, de-duplicated, sorted fractions."""
    if isinstance(spec, str):
        try:
            values = [float(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise CxrclError(f"--fractions {spec!r}: give numbers in (0, 1], e.g. 0.01,0.1,1.0") from None
    else:
        values = [float(x) for x in spec]
    if not values:
        raise CxrclError("no label fractions given: use e.g. --fractions 0.01,0.1,1.0")
    return tuple(sorted({check_fraction(v) for v in values}))


def seed_list(seeds: int | Sequence[int]) -> list[int]:
    """An int K means seeds 0..K-1; a sequence is taken as is."""
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise CxrclError(f"--seeds {seeds}: need at least one seed (3 or more for a published number)")
        return list(range(int(seeds)))
    out = [int(s) for s in seeds]
    if not out:
        raise CxrclError("no seeds given: use e.g. --seeds 3")
    return out
