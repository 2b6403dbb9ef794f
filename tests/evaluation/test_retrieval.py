"""Retrieval Recall@K: a hand-computed similarity matrix, a perfect model, duplicates, chance."""

from __future__ import annotations

import json
from math import comb

import numpy as np
import pytest

from cxrcl.errors import CxrclError
from cxrcl.evaluation.image_text_cli import evaluate_image_text
from cxrcl.evaluation.image_text_model import ImageTextModel
from cxrcl.evaluation.retrieval import (
    chance_any,
    group_texts,
    label_recall_at_k,
    label_relevance,
    parse_ks,
    recall_at_k,
)
from tests.evaluation.fake_image_text import SIZE, FindingModel, IdModel, make_paired_dataset


def test_recall_on_a_known_matrix_matches_hand_computation():
    # 4 images, 4 distinct reports; image i's report is i
    sim = np.array([[0.9, 0.1, 0.2, 0.0],    # own text rank 1
                    [0.8, 0.5, 0.1, 0.0],    # rank 2
                    [0.3, 0.4, 0.2, 0.1],    # rank 3
                    [0.5, 0.6, 0.7, 0.1]])   # rank 4
    r = recall_at_k(sim, np.arange(4), [1, 2, 3])
    assert r["recall_at_k"]["image_to_report"] == {"1": 0.25, "2": 0.5, "3": 0.75}
    # report -> image: column j, rank of image j: col0 [.9,.8,.3,.5] -> 1; col1 [.1,.5,.4,.6] -> 2;
    # col2 [.2,.1,.2,.7] -> 3 (tie with image 0 counts against); col3 [0,0,.1,.1] -> 2 (tie)
    assert r["recall_at_k"]["report_to_image"] == {"1": 0.25, "2": 0.75, "3": 1.0}
    assert r["chance_at_k"]["image_to_report"] == {"1": 0.25, "2": 0.5, "3": 0.75}
    assert r["median_rank"] == {"image_to_report": 2.5, "report_to_image": 2.0}


def test_shared_report_counts_any_of_its_images():
    # images 0 and 1 share text 0; image 2 has text 1
    sim = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    r = recall_at_k(sim, np.array([0, 0, 1]), [1])
    assert r["recall_at_k"]["image_to_report"]["1"] == pytest.approx(2 / 3)  # image 0 misses
    # text 0 (column [.1, .8, .3]) finds its image 1 first; text 1 ([.9, .2, .7]) finds image 0
    # before its own image 2
    assert r["recall_at_k"]["report_to_image"]["1"] == 0.5
    # chance report->image at K=1: text 0 has 2 of 3 images, text 1 has 1 of 3
    assert r["chance_at_k"]["report_to_image"]["1"] == pytest.approx((2 / 3 + 1 / 3) / 2)


def test_constant_model_gets_zero_not_chance():
    r = recall_at_k(np.zeros((5, 5)), np.arange(5), [1, 4])
    assert r["recall_at_k"]["image_to_report"] == {"1": 0.0, "4": 0.0}


@pytest.mark.parametrize("n, m, k", [(10, 1, 1), (10, 1, 5), (10, 3, 4), (7, 2, 7), (5, 5, 1)])
def test_chance_matches_combinatorics(n, m, k):
    exact = 1 - (comb(n - m, k) / comb(n, k) if k <= n - m else 0)
    assert chance_any(n, m, k) == pytest.approx(exact)


def test_group_texts_and_parse_ks():
    uniq, idx = group_texts(["a ", "b", "a", " b"])
    assert uniq == ["a", "b"] and idx.tolist() == [0, 1, 0, 1]
    assert parse_ks("10,1,5,5") == [1, 5, 10]
    for bad in ("0,1", "a", ""):
        with pytest.raises(CxrclError, match="--k"):
            parse_ks(bad)


def test_perfect_model_gets_recall_one(tmp_path):
    ds = make_paired_dataset(tmp_path / "d")
    model = ImageTextModel(IdModel(len(ds)), SIZE, "id", device="cpu")
    res = evaluate_image_text("retrieval", "id", ds.root, tmp_path / "r.json", model=model)
    r = res["results"][0]
    n = len(ds.indices("test"))
    assert r["n_images"] == n and r["n_reports"] == n
    for d in ("image_to_report", "report_to_image"):
        assert r["recall_at_k"][d] == {"1": 1.0, "5": 1.0, "10": 1.0}
        assert r["chance_at_k"][d]["1"] == pytest.approx(1 / n)
        assert r["chance_at_k"][d]["10"] == pytest.approx(10 / n)
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert on_disk["task"] == "retrieval" and on_disk["summary"]["0.0"]["recall_at_k"]["image_to_report"]["1"] == 1.0


def test_class_level_model_is_near_chance_per_instance(tmp_path):
    """FindingModel sees only the two findings: an image's own report is tied with every report of
    the same findings, and ties count against it, so R@1 stays at 0."""
    ds = make_paired_dataset(tmp_path / "d")
    model = ImageTextModel(FindingModel(), SIZE, "f", device="cpu")
    r = evaluate_image_text("retrieval", "f", ds.root, model=model)["results"][0]
    assert r["recall_at_k"]["image_to_report"]["1"] == 0.0


def test_retrieval_needs_text(tmp_path):
    ds = make_paired_dataset(tmp_path / "d", with_text=False)
    model = ImageTextModel(IdModel(len(ds)), SIZE, "id", device="cpu")
    with pytest.raises(CxrclError, match="no text column"):
        evaluate_image_text("retrieval", "id", ds.root, model=model)


def test_label_relevance_uses_any_image_of_a_shared_text():
    # images 0, 1 share text 0 but differ in labels; image 2 (text 1) has image 1's labels
    lab = np.array([[1, 0], [0, 1], [0, 1]], float)
    rel = label_relevance(lab, np.array([0, 0, 1]), 2)
    assert rel.tolist() == [[True, False], [True, True], [True, True]]
    # unknown labels (NaN) match only unknown
    rel = label_relevance(np.array([[np.nan], [0.0], [np.nan]]), np.arange(3), 3)
    assert rel.tolist() == [[True, False, True], [False, True, False], [True, False, True]]


def test_label_precision_on_a_known_matrix():
    # 3 images x 3 texts; texts 0 and 2 are relevant to image 0, only text 1 to images 1 and 2
    rel = np.array([[1, 0, 1], [0, 1, 0], [0, 1, 0]], bool)
    sim = np.array([[0.9, 0.5, 0.1],    # top-2: text 0 (rel), text 1 (not) -> P@2 1/2
                    [0.2, 0.2, 0.1],    # tie of texts 0 and 1 at the top: the wrong one first
                    [0.0, 0.8, 0.3]])
    r = label_recall_at_k(sim, rel, [1, 2])
    assert r["recall_at_k"]["image_to_report"] == {"1": pytest.approx(2 / 3), "2": 1.0}
    assert r["precision_at_k"]["image_to_report"] == {"1": pytest.approx(2 / 3), "2": pytest.approx(1 / 2)}
    assert r["precision_chance_at_k"]["image_to_report"]["1"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 3)
    # report -> image: text 0 [.9, .2, 0] -> image 0 (rel); text 1 [.5, .2, .8] -> image 2 (rel);
    # text 2 [.1, .1, .3] -> image 2 (not), then image 0 ties image 1 and comes after it
    assert r["recall_at_k"]["report_to_image"] == {"1": pytest.approx(2 / 3), "2": pytest.approx(2 / 3)}
    assert r["chance_at_k"]["report_to_image"]["1"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 3) / 3)


def test_finding_model_is_perfect_by_labels(tmp_path):
    """The model that sees only the findings finds reports of the same findings every time."""
    ds = make_paired_dataset(tmp_path / "d")
    model = ImageTextModel(FindingModel(), SIZE, "f", device="cpu")
    res = evaluate_image_text("retrieval", "f", ds.root, tmp_path / "r.json", model=model, match="labels")
    r = res["results"][0]
    assert res["protocol"]["match"] == "labels" and res["protocol"]["match_labels"] == ds.label_names
    for d in ("image_to_report", "report_to_image"):
        assert r["recall_at_k"][d]["1"] == 1.0 and r["precision_at_k"][d]["1"] == 1.0
        assert 0 < r["precision_chance_at_k"][d]["1"] < 0.6
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["0.0"]["precision_at_k"] == r["precision_at_k"]


def test_match_must_be_text_or_labels(tmp_path):
    ds = make_paired_dataset(tmp_path / "d")
    model = ImageTextModel(IdModel(len(ds)), SIZE, "id", device="cpu")
    with pytest.raises(CxrclError, match="--match"):
        evaluate_image_text("retrieval", "id", ds.root, model=model, match="label")


class _PooledFindingModel(FindingModel):
    """FindingModel trained (as far as the evaluation knows) on sentences drawn from a pool."""

    def __init__(self, pool: str):
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(text_sentence_pool=pool)


def test_sentence_report_embedding_is_the_mean_of_its_pool_sentences():
    report = "Case 7. There is a nodule. No effusion."
    pooled = ImageTextModel(_PooledFindingModel("findings"), SIZE, "f", device="cpu")
    got = pooled.report_embeddings([report], "sentences")[0]
    parts = pooled.texts(["There is a nodule.", "No effusion."])  # "Case 7." names no finding
    want = parts.mean(axis=0) / np.linalg.norm(parts.mean(axis=0))
    assert np.allclose(got, want, atol=1e-6)
    every = ImageTextModel(_PooledFindingModel("all"), SIZE, "f", device="cpu")
    parts_all = every.texts(["Case 7.", "There is a nodule.", "No effusion."])
    mean_all = parts_all.mean(axis=0) / np.linalg.norm(parts_all.mean(axis=0))
    assert np.allclose(every.report_embeddings([report], "sentences")[0], mean_all, atol=1e-6)
    assert not np.allclose(mean_all, want, atol=1e-3)
    assert np.allclose(pooled.report_embeddings([report], "whole")[0], pooled.texts([report])[0])


def test_sentence_report_embedding_in_the_retrieval_json(tmp_path):
    ds = make_paired_dataset(tmp_path / "d")
    model = ImageTextModel(_PooledFindingModel("findings"), SIZE, "f", device="cpu")
    res = evaluate_image_text("retrieval", "f", ds.root, model=model, match="labels", report_embedding="sentences")
    assert res["protocol"]["report_embedding"] == "sentences" and res["protocol"]["sentence_pool"] == "findings"
    assert res["results"][0]["precision_at_k"]["image_to_report"]["1"] == 1.0
    with pytest.raises(CxrclError, match="--report-embedding"):
        evaluate_image_text("retrieval", "f", ds.root, model=model, report_embedding="sentence")
