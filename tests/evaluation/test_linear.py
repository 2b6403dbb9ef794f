import json

import numpy as np
import pytest

from cxrcl.errors import CxrclError
from cxrcl.evaluation.features import extract_splits, fit_pixel_pca
from cxrcl.evaluation.knn import knn_probe
from cxrcl.evaluation.linear import linear_probe, save_json

from .conftest import RandomExtractor, make_visible_dataset, pixel_extractor

FRACTIONS = (0.05, 1.0)


def _check_schema(res, task, labels, fractions, seeds):
    for key in ("task", "labels", "run", "data", "degrade_test", "results", "summary", "feature_dim"):
        assert key in res
    assert res["task"] == task and res["labels"] == labels
    for key in ("path", "content_hash", "split_hash"):
        assert res["data"][key]
    assert len(res["results"]) == len(fractions) * seeds
    for r in res["results"]:
        assert {"fraction", "seed", "n_train", "auroc", "auroc_per_label"} <= set(r)
        assert set(r["auroc_per_label"]) == set(labels)
        assert np.isclose(r["auroc"], np.mean(list(r["auroc_per_label"].values())))
    assert set(res["summary"]) == {str(f) for f in fractions}
    for s in res["summary"].values():
        assert {"auroc_mean", "auroc_std", "n_train_mean", "n_seeds"} <= set(s)
        assert s["n_seeds"] == seeds
    json.dumps(res, allow_nan=False)


def test_linear_probe_pixels_beat_random(visible_ds, tmp_path):
    good = linear_probe(visible_ds, pixel_extractor, ["square", "bar"], fractions=FRACTIONS,
                        seeds=2, run_name="pixels-raw")
    _check_schema(good, "linear", ["square", "bar"], FRACTIONS, 2)
    assert good["summary"]["1.0"]["auroc_mean"] > 0.9
    assert good["feature_dim"] == 64 and good["run"] == "pixels-raw"
    small, full = good["summary"]["0.05"], good["summary"]["1.0"]
    assert small["n_train_mean"] < full["n_train_mean"] == len(visible_ds.indices("train"))
    assert full["auroc_std"] == 0.0  # fraction 1.0: every seed sees the same rows
    for r in good["results"]:
        assert set(r["C_per_label"]) == {"square", "bar"}

    rand = linear_probe(visible_ds, RandomExtractor(), "all", fractions=(1.0,), seeds=1)
    assert rand["summary"]["1.0"]["auroc_mean"] < 0.7
    const = linear_probe(visible_ds, lambda im: np.ones((len(im), 4), np.float32), "all",
                         fractions=(1.0,), seeds=1)
    assert const["summary"]["1.0"]["auroc_mean"] == pytest.approx(0.5)

    out = save_json(good, tmp_path / "sub" / "linear.json")
    assert json.loads(out.read_text())["summary"] == good["summary"]


def test_same_labelled_rows_for_every_extractor(visible_ds):
    feats = extract_splits(visible_ds, pixel_extractor)
    a = linear_probe(visible_ds, None, "all", fractions=(0.05,), seeds=2, features=feats)
    b = linear_probe(visible_ds, RandomExtractor(), "all", fractions=(0.05,), seeds=2)
    assert [r["n_train"] for r in a["results"]] == [r["n_train"] for r in b["results"]]
    assert [r["n_train_per_label"] for r in a["results"]] == [r["n_train_per_label"] for r in b["results"]]


def test_pixel_pca_floor_and_degraded_test(visible_ds):
    capped = fit_pixel_pca(visible_ds, visible_ds.indices("train")[:50], n_components=10_000, size=16)
    assert capped.n_components == 49 and capped(visible_ds.images[:3]).shape == (3, 49)
    pca = fit_pixel_pca(visible_ds)  # defaults: 32 px, 256 components capped at n_train - 1
    assert pca.size == 32 and pca.n_components == len(visible_ds.indices("train")) - 1
    clean = linear_probe(visible_ds, pca, "square", fractions=(1.0,), seeds=1, run_name="pixels")
    assert clean["summary"]["1.0"]["auroc_mean"] > 0.9
    bad = linear_probe(visible_ds, pca, "square", fractions=(1.0,), seeds=1, degrade_level=3,
                       run_name="pixels")
    assert bad["degrade_test"] == 3
    assert bad["summary"]["1.0"]["auroc_mean"] < clean["summary"]["1.0"]["auroc_mean"]


def test_knn_probe(visible_ds):
    res = knn_probe(visible_ds, pixel_extractor, ["square", "bar"], fractions=FRACTIONS, seeds=2, k=10)
    _check_schema(res, "knn", ["square", "bar"], FRACTIONS, 2)
    assert res["summary"]["1.0"]["auroc_mean"] > 0.9


def test_missing_test_class_is_an_error(tmp_path):
    ds = make_visible_dataset(tmp_path / "d", n=200)
    meta = ds.meta
    # make every known test label of "bar" negative -> no positives in test
    import pandas as pd

    from cxrcl.data.writer import write_prepared
    meta = meta.copy()
    test = meta["split"] == "test"
    meta.loc[test & meta["label_bar"].notna(), "label_bar"] = 0
    meta["label_bar"] = pd.to_numeric(meta["label_bar"])
    ds2 = write_prepared(tmp_path / "d2", np.asarray(ds.images), meta, source="synthetic",
                         label_names=["square", "bar"])
    with pytest.raises(CxrclError, match="bar"):
        linear_probe(ds2, pixel_extractor, "all", fractions=(1.0,), seeds=1)
    with pytest.raises(CxrclError, match="unknown label"):
        linear_probe(ds2, pixel_extractor, "nope", fractions=(1.0,), seeds=1)


def test_default_c_when_val_lacks_a_class_and_global_scaler():
    from cxrcl.evaluation.linear import GlobalScaler, fit_predict_logistic

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5)) * [1, 2, 3, 4, 100]
    y = (x[:, 0] > 0).astype(int)
    scores, info = fit_predict_logistic(x, y, x[:5], np.zeros(5, int), x)
    assert info == {"C": 1.0, "c_selected_by": "default"} and scores.shape == (40,)
    scores, info = fit_predict_logistic(x, y, x, y, x)
    assert info["c_selected_by"] == "val" and info["C"] in (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    z = GlobalScaler().fit(x).transform(x)
    assert np.allclose(z.mean(0), 0) and np.isclose((z ** 2).sum(1).mean() / 5, 1.0)
    # relative scale kept: the 100x feature stays the largest
    assert z.std(0).argmax() == 4


def _spy_on_val(visible_ds, val_labels, fractions=(0.1, 1.0), seeds=2):
    """Run the shared probe loop with a fit_predict that records the val labels it is given."""
    from cxrcl.evaluation.results import run_probe

    seen = []

    def fit_predict(xt, yt, xv, yv, xte):
        seen.append(len(yv))
        return np.zeros(len(xte)), {}

    res = run_probe(visible_ds, pixel_extractor, ["square"], task="linear", fit_predict=fit_predict,
                    fractions=fractions, seeds=seeds, val_labels=val_labels)
    return res, seen


def test_val_labels_are_sampled_at_the_label_fraction_by_default(visible_ds):
    from cxrcl.evaluation.fractions import sample_label_fraction

    res, seen = _spy_on_val(visible_ds, "matched")
    y_val = visible_ds.labels(["square"], visible_ds.indices("val"))
    known_val = int((~np.isnan(y_val[:, 0])).sum())
    assert res["protocol"]["val_labels"].startswith("matched")
    for r in res["results"]:
        rows = sample_label_fraction(y_val, r["fraction"], r["seed"])
        assert r["n_val"] == len(rows)
        assert r["n_val_per_label"]["square"] == int((~np.isnan(y_val[rows, 0])).sum())
        if r["fraction"] < 1:
            # 10 % of the val split (not all of it), and both classes to choose C on
            assert r["n_val"] == int(np.ceil(0.1 * len(y_val)))
            assert {0, 1} <= set(y_val[rows, 0][~np.isnan(y_val[rows, 0])].astype(int))
        else:
            assert r["n_val_per_label"]["square"] == known_val
    # fit_predict saw exactly those val labels (0.1 x 2 seeds, then 1.0 evaluated once)
    assert seen == [res["results"][i]["n_val_per_label"]["square"] for i in (0, 1, 2)]
    assert seen[0] < known_val and seen[-1] == known_val


def test_full_val_labels_on_request_and_recorded(visible_ds):
    res, seen = _spy_on_val(visible_ds, "full", fractions=(0.1,), seeds=1)
    known_val = int((~np.isnan(visible_ds.labels(["square"], visible_ds.indices("val"))[:, 0])).sum())
    assert res["protocol"]["val_labels"].startswith("full") and seen == [known_val]
    with pytest.raises(CxrclError, match="val-labels"):
        _spy_on_val(visible_ds, "some")


def test_linear_probe_records_val_labels_and_knn_uses_none(visible_ds):
    lin = linear_probe(visible_ds, pixel_extractor, "all", fractions=(0.1,), seeds=1)
    assert lin["protocol"]["val_labels"].startswith("matched")
    assert lin["results"][0]["n_val"] < len(visible_ds.indices("val"))
    knn = knn_probe(visible_ds, pixel_extractor, "all", fractions=(0.1,), seeds=1)
    assert knn["protocol"]["val_labels"].startswith("unused") and "n_val" not in knn["results"][0]
