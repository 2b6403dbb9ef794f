"""Bootstrap CIs and the paired bootstrap test (cxrcl.evaluation.bootstrap)."""

import json

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from cxrcl.errors import CxrclError
from cxrcl.evaluation.bootstrap import (
    auroc_ci,
    bootstrap_counts,
    common_fractions,
    mean_ci,
    paired_bootstrap,
    scores_path,
    weighted_auroc,
)
from cxrcl.evaluation.linear import linear_probe, save_json

from .conftest import RandomExtractor, pixel_extractor


def test_weighted_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 1)  # many ties
    w = bootstrap_counts(300, 40, rng)
    ref = [roc_auc_score(y, s, sample_weight=wi) for wi in w]
    assert np.allclose(weighted_auroc(y, s, w), ref, atol=1e-12)
    assert weighted_auroc(y, s, np.ones((1, 300)))[0] == pytest.approx(roc_auc_score(y, s))
    only_neg = np.where(y == 0, 1, 0)[None]
    assert np.isnan(weighted_auroc(y, s, only_neg)[0])


def test_ci_covers_known_auroc_in_simulation():
    # binormal: positives N(d, 1), negatives N(0, 1) -> AUROC = Phi(d / sqrt 2)
    d, n, sims = 1.0, 120, 200
    truth = norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(0)
    hits, widths = 0, []
    for i in range(sims):
        y = np.r_[np.ones(n // 2), np.zeros(n // 2)]
        s = rng.normal(size=n) + d * y
        lo, hi = auroc_ci(y, s, n_boot=500, seed=i)
        hits += lo <= truth <= hi
        widths.append(hi - lo)
    coverage = hits / sims
    assert coverage >= 0.90, coverage
    assert coverage <= 0.995, coverage  # not trivially wide either
    assert 0.1 < np.mean(widths) < 0.3


def _paired_sim(rng, n, d_a, d_b):
    y = (rng.random(n) < 0.5).astype(float)
    latent = rng.normal(size=n)  # shared per-image difficulty: what pairing removes
    sa = latent + d_a * y + 0.7 * rng.normal(size=n)
    sb = latent + d_b * y + 0.7 * rng.normal(size=n)
    return y, sa, sb


def _as_result(y, s, run):
    return {"run": run, "labels": ["x"], "data": {"content_hash": "h", "split_hash": "s"},
            "results": [{"fraction": 1.0, "seed": 0}],
            "test_scores": {"rows": list(range(len(y))), "labels": ["x"], "y": [[v] for v in y],
                            "scores": [[[v] for v in s]], "fraction": [1.0], "seed": [0]}}


def test_paired_test_flags_real_difference_not_null():
    rng = np.random.default_rng(3)
    flagged_real, flagged_null = 0, 0
    sims = 60
    for _ in range(sims):
        y, sa, sb = _paired_sim(rng, 300, 1.2, 0.6)
        r = paired_bootstrap(_as_result(y, sa, "a"), _as_result(y, sb, "b"), n_boot=400)
        flagged_real += r["significant"]
        assert r["diff"] == pytest.approx(roc_auc_score(y, sa) - roc_auc_score(y, sb))
        y, sa, sb = _paired_sim(rng, 300, 0.8, 0.8)
        flagged_null += paired_bootstrap(_as_result(y, sa, "a"), _as_result(y, sb, "b"),
                                         n_boot=400)["significant"]
    assert flagged_real / sims >= 0.8
    assert flagged_null / sims <= 0.12


def test_eval_json_carries_cis_and_paired_test_reads_sidecar(visible_ds, tmp_path):
    good = linear_probe(visible_ds, pixel_extractor, "square", fractions=(0.05, 1.0), seeds=2,
                        run_name="pixels-raw")
    bad = linear_probe(visible_ds, RandomExtractor(), "square", fractions=(0.05, 1.0), seeds=2,
                       run_name="noise")
    for res in (good, bad):
        json.dumps(res, allow_nan=False)  # inline scores keep the dict JSON-serialisable
        for r in res["results"]:
            lo, hi = r["auroc_ci"]
            assert lo <= r["auroc"] <= hi and lo < hi
            assert set(r["auroc_ci_per_label"]) == {"square"}
        for s in res["summary"].values():
            assert s["auroc_ci"][0] <= s["auroc_mean"] <= s["auroc_ci"][1]
        assert "bootstrap" in res["protocol"]["uncertainty"]
    pa, pb = save_json(good, tmp_path / "a.json"), save_json(bad, tmp_path / "b.json")
    ref = json.loads(pa.read_text())["test_scores"]
    assert ref["file"] == "a.scores.npz" and scores_path(pa).is_file() and "scores" not in ref
    assert "scores" in good["test_scores"]  # save_json does not change the caller's dict
    assert common_fractions(pa, pb) == [0.05, 1.0]
    real = paired_bootstrap(pa, pb, fraction=1.0)
    assert real["significant"] and real["diff"] > 0.2 and real["p"] < 0.05
    assert real["seeds"] == [0, 1] and real["n_test"] == len(visible_ds.indices("test"))
    same = paired_bootstrap(pa, good, fraction=0.05)  # the same results: no difference
    assert same["diff"] == 0.0 and not same["significant"] and same["p"] == 1.0
    with pytest.raises(CxrclError, match="name one"):
        paired_bootstrap(pa, pb)
    scores_path(pb).unlink()
    with pytest.raises(CxrclError, match="not found"):
        paired_bootstrap(pa, pb, fraction=1.0)


def test_sidecar_of_another_file_is_left_alone(visible_ds, tmp_path):
    res = linear_probe(visible_ds, pixel_extractor, "square", fractions=(1.0,), seeds=1)
    (tmp_path / "r.scores.npz").write_text("mine")
    with pytest.raises(CxrclError, match="not written by cxrcl"):
        save_json(res, tmp_path / "r.json")
    assert (tmp_path / "r.scores.npz").read_text() == "mine"


def test_mean_ci_brackets_the_mean_and_narrows_with_more_images():
    assert mean_ci(np.full(50, 0.2)) == [pytest.approx(0.2), pytest.approx(0.2)]
    rng = np.random.default_rng(0)
    small, large = rng.normal(0.2, 0.1, 100), rng.normal(0.2, 0.1, 1600)
    lo, hi = mean_ci(small)
    assert lo < small.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * 0.1 / 10, rel=0.25)
    lo4, hi4 = mean_ci(large)
    assert (hi4 - lo4) < (hi - lo) / 3
