"""CLIP / ConVIRT: empty reports skipped with a count, the loss falls on the phantom via the CLI."""


import numpy as np
import pandas as pd
import pytest
import torch

from cxrcl.data.normalize import to_model_input
from cxrcl.data.phantom import make_phantom
from cxrcl.data.prepared import PreparedDataset
from cxrcl.errors import CxrclError
from cxrcl.losses.info_nce import info_nce
from cxrcl.methods.image_text import image_text_nce, report_text, sample_sentences, sentence_pool
from cxrcl.methods.registry import build_method
from cxrcl.text.reports import split_sentences
from tests.conftest import TINY_VIT
from tests.methods.image_text_runs import FAST, pretrain_logs


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp("ph") / "phantom", n=96, size=64)


def test_empty_reports_are_skipped_and_counted(phantom, caplog):
    torch.manual_seed(0)
    m = build_method(f"clip:{FAST}", TINY_VIT, 32).eval()
    ds = PreparedDataset(root=phantom.root / "empty-view", images=phantom.images,
                         meta=phantom.meta.copy(), info=phantom.info)
    ds.meta.loc[[1, 4], "report"] = ""
    rows = np.arange(6)
    m.set_batch_rows(rows, ds)
    x = to_model_input(ds.images[rows], 32)
    with caplog.at_level("WARNING"):
        out = m.training_step(x, torch.Generator())
    assert "2 of 96 rows have an empty 'report'" in caplog.text
    assert float(out["reports"]) == pytest.approx(4 / 6)
    keep = [0, 2, 3, 5]
    with torch.no_grad():
        zi = m.encode_image(x[keep])
        zt = m.encode_text(m.batch_reports(6)[0])[keep]
    torch.testing.assert_close(out["loss"].detach(), info_nce(zi, zt, m.temperature.detach()))


def test_every_report_empty_is_one_error(phantom):
    m = build_method(f"clip:{FAST}", TINY_VIT, 32)
    meta = phantom.meta.copy()
    meta["report"] = pd.Series([""] * len(meta))
    ds = PreparedDataset(root=phantom.root / "all-empty", images=phantom.images, meta=meta, info=phantom.info)
    m.set_batch_rows(np.arange(4), ds)
    with pytest.raises(Exception, match="every 'report' of .* is empty"):
        m.training_step(torch.randn(4, 1, 32, 32), torch.Generator())


@pytest.mark.slow
def test_cli_loss_falls_on_the_phantom(phantom, tmp_path):
    losses = [r["loss"] for r in pretrain_logs("clip", phantom.root, tmp_path / "run")]
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses


def test_repeated_reports_are_not_each_others_negatives(phantom):
    """Two images with the same report: each other's key is removed from the softmax (and only
    that one), so the loss equals InfoNCE with that key excluded, not plain InfoNCE."""
    torch.manual_seed(0)
    m = build_method(f"clip:{FAST}", TINY_VIT, 32).eval()
    ds = PreparedDataset(root=phantom.root / "repeat-view", images=phantom.images,
                         meta=phantom.meta.copy(), info=phantom.info)
    ds.meta.loc[3, "report"] = ds.meta.loc[0, "report"]
    rows = np.arange(6)
    m.set_batch_rows(rows, ds)
    x = to_model_input(ds.images[rows], 32)
    out = m.training_step(x, torch.Generator())
    exclude = torch.zeros(6, 6, dtype=torch.bool)
    exclude[0, 3] = exclude[3, 0] = True
    with torch.no_grad():
        zi, zt = m.encode_image(x), m.encode_text(m.batch_reports(6)[0])
    t = m.temperature.detach()
    torch.testing.assert_close(out["loss"].detach(), image_text_nce(zi, zt, t, exclude=exclude))
    assert abs(float(out["loss"].detach()) - float(info_nce(zi, zt, t))) > 1e-4
    plain = build_method(f"clip:{FAST}:dedupe_texts=false", TINY_VIT, 32).eval()
    plain.load_state_dict(m.state_dict())
    plain.set_batch_rows(rows, ds)
    torch.testing.assert_close(plain.training_step(x, torch.Generator())["loss"].detach(), info_nce(zi, zt, t))


def test_sentence_sampling_draws_whole_sentences_of_the_report_per_step(phantom):
    m = build_method(f"clip:{FAST}:text_sentences=1", TINY_VIT, 32)
    rows = np.arange(8)
    m.set_batch_rows(rows, phantom)
    full = [report_text(t) for t in phantom.texts("report", rows)]
    m.set_progress(5, 100)
    a = m.batch_reports(8)[0]
    assert a == m.batch_reports(8)[0]  # the same step draws the same sentences (exact resume)
    for got, report in zip(a, full, strict=True):
        assert got in split_sentences(report) and len(split_sentences(got)) == 1
    m.set_progress(6, 100)
    assert m.batch_reports(8)[0] != a  # another step, other sentences
    m.eval()
    assert m.batch_reports(8)[0] == full  # evaluation reads the whole report
    with pytest.raises(CxrclError, match="text_sentences"):
        build_method(f"clip:{FAST}:text_sentences=-1", TINY_VIT, 32)


def test_sentence_pool_keeps_finding_sentences_and_widens_when_a_report_has_none():
    report = ("The heart is normal in size. Mediastinal contours are normal. No focal consolidation. "
              "Moderate left pleural effusion. Visualized osseous structures are unremarkable.")
    sentences = split_sentences(report)
    assert sentence_pool(sentences, "all") == sentences
    findings = sentence_pool(sentences, "findings")
    assert "Mediastinal contours are normal." not in findings
    assert "Visualized osseous structures are unremarkable." not in findings
    assert {"No focal consolidation.", "Moderate left pleural effusion."} <= set(findings)
    assert sentence_pool(sentences, "positive") == ["Moderate left pleural effusion."]
    normal = split_sentences("No focal consolidation. Bones are unremarkable.")
    assert sentence_pool(normal, "positive") == ["No focal consolidation."]  # -> findings
    boiler = split_sentences("Bones are unremarkable. Soft tissues are normal.")
    assert sentence_pool(boiler, "findings") == boiler  # -> all
    for step in range(20):  # a one-sentence pool is drawn every step
        assert sample_sentences(report, 1, (step, 0), "positive") == "Moderate left pleural effusion."
    with pytest.raises(CxrclError, match="text_sentence_pool"):
        build_method(f"clip:{FAST}:text_sentences=1:text_sentence_pool=some", TINY_VIT, 32)
    with pytest.raises(CxrclError, match="text_sentences=1"):  # a pool without sentence draws
        build_method(f"clip:{FAST}:text_sentence_pool=findings", TINY_VIT, 32)


def test_training_draws_from_the_configured_sentence_pool(phantom):
    m = build_method(f"clip:{FAST}:text_sentences=1:text_sentence_pool=findings", TINY_VIT, 32)
    rows = np.arange(16)
    m.set_batch_rows(rows, phantom)
    full = [report_text(t) for t in phantom.texts("report", rows)]
    for step in range(5):
        m.set_progress(step, 100)
        for got, report in zip(m.batch_reports(16)[0], full, strict=True):
            assert got in sentence_pool(split_sentences(report), "findings")


def test_sentence_count_drawn_between_min_and_max_covers_one_sentence_and_the_whole_pool():
    report = ("The heart is normal in size. No focal consolidation. Moderate left pleural effusion. "
              "No pneumothorax. Visualized osseous structures are unremarkable.")
    pool = sentence_pool(split_sentences(report), "findings")
    assert len(pool) == 4  # the osseous sentence names no finding
    counts = [len(split_sentences(sample_sentences(report, 8, (step, 0), "findings", k_min=1)))
              for step in range(200)]
    assert min(counts) == 1 and max(counts) == 4  # one sentence on some steps, the whole pool on most
    assert 0.1 < np.mean(np.array(counts) == 1) < 0.2  # k = 1 is one of the 8 equally likely counts
    for step in range(20):  # k_min = 0 keeps the earlier fixed-count draws exactly
        assert sample_sentences(report, 1, (step, 3), "findings") == sample_sentences(report, 1, (step, 3),
                                                                                       "findings", k_min=0)
    for bad in ("text_sentences=2:text_sentences_min=3", "text_sentences_min=1"):
        with pytest.raises(CxrclError, match="text_sentences_min"):
            build_method(f"clip:{FAST}:{bad}", TINY_VIT, 32)
