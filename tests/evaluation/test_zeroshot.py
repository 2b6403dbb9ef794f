"""Zero-shot evaluation: MaCo's positive/negative scoring, plain cosine, prompt files, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from cxrcl.cli import main
from cxrcl.errors import CxrclError
from cxrcl.evaluation.image_text_cli import evaluate_image_text
from cxrcl.evaluation.image_text_model import ImageTextModel, load_image_text_model
from cxrcl.evaluation.zeroshot import (
    DEFAULT_PROMPTS,
    class_prompts,
    expand,
    load_prompts,
    prompts_seen,
    zeroshot_scores,
)
from tests.evaluation.fake_image_text import SIZE, FindingModel, make_paired_dataset


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    return make_paired_dataset(tmp_path_factory.mktemp("zs") / "paired")


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *fragments):
    lines = [x for x in err.strip().splitlines() if x.startswith("cxrcl: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], lines[0]


def test_default_prompts_are_macos_scheme():
    ps = load_prompts()
    p = class_prompts(ps.for_label("pneumothorax"), "posneg")
    assert p["positive"] == ["There is pneumothorax."]
    assert p["negative"] == ["the lung is clear.", "There is no pneumothorax.", "no pneumothorax.",
                             "no evidence of pneumothorax."]
    assert set(class_prompts(ps.for_label("nodule"), "cosine")) == {"positive"}


def test_expand_ensembles_phrases_and_templates_once():
    t = ["There is {c}.", "the lung is clear.", "no {c}."]
    assert expand(t, ["a", "b"]) == ["There is a.", "There is b.", "the lung is clear.", "no a.", "no b."]
    assert expand(t, ["a", "b"], "first") == ["There is a."]


class VectorModel:
    """texts() returns fixed vectors, so scores can be computed by hand."""

    logit_scale = 5.0
    vectors = {"P1": [1.0, 0.0], "P2": [0.0, 1.0], "N1": [-1.0, 0.0], "N2": [0.0, 1.0]}

    def texts(self, texts):
        return np.array([self.vectors[t] for t in texts], np.float32)


def test_posneg_is_softmax_of_averaged_prompts_by_hand():
    img = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)
    prompts = {"x": {"positive": ["P1", "P2"], "negative": ["N1", "N2"]}}
    scores, probs = zeroshot_scores(VectorModel(), img, prompts, "posneg")
    pos = np.array([1, 1]) / np.sqrt(2)  # mean of P1, P2, re-normalised
    neg = np.array([-1, 1]) / np.sqrt(2)
    diff = 5.0 * (img @ pos - img @ neg)
    np.testing.assert_allclose(scores[:, 0], diff, rtol=1e-5)
    logits = 5.0 * np.stack([img @ pos, img @ neg], 1)
    soft = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(probs[:, 0], soft[:, 0], rtol=1e-5)
    cos, none = zeroshot_scores(VectorModel(), img, prompts, "cosine")
    assert none is None
    np.testing.assert_allclose(cos[:, 0], img @ pos, rtol=1e-5)


def test_posneg_on_fake_model_separates_findings(paired, tmp_path):
    model = ImageTextModel(FindingModel(), SIZE, "fake", device="cpu")
    res = evaluate_image_text("zeroshot", "fake", paired.root, tmp_path / "z.json", labels="all", model=model)
    r = res["results"][0]
    assert res["task"] == "zeroshot" and res["labels"] == ["nodule", "effusion"]
    assert r["auroc"] == pytest.approx(1.0) and set(r["auroc_per_label"]) == {"nodule", "effusion"}
    assert r["n_test"] == len(paired.indices("test")) and r["split"] == "test"
    assert r["mean_probability"]["nodule"]["positive"] > 0.5 > r["mean_probability"]["nodule"]["negative"]
    lo, hi = r["auroc_ci95"]
    assert lo <= r["auroc"] <= hi
    assert res["summary"]["0.0"]["auroc_mean"] == pytest.approx(1.0)
    on_disk = json.loads((tmp_path / "z.json").read_text())
    assert on_disk["protocol"]["scoring"] == "posneg" and "There is nodule." in \
        on_disk["protocol"]["prompts"]["nodule"]["positive"]


def test_posneg_follows_the_text_side(paired):
    """Control for the test above: a text side with negation inverted ("no X" read as X, "X" as
    no X) ranks every image the wrong way round."""
    class Inverted(FindingModel):
        def encode_text(self, texts):
            e = super().encode_text(texts)
            return e[:, [1, 0, 3, 2]]
    model = ImageTextModel(Inverted(), SIZE, "inverted", device="cpu")
    res = evaluate_image_text("zeroshot", "inverted", paired.root, labels="nodule", model=model)
    assert res["results"][0]["auroc"] == pytest.approx(0.0)


def test_cosine_scoring_and_val_split(paired):
    model = ImageTextModel(FindingModel(), SIZE, "fake", device="cpu")
    res = evaluate_image_text("zeroshot", "fake", paired.root, labels="effusion", scoring="cosine",
                              split="val", model=model)
    assert res["results"][0]["auroc"] == pytest.approx(1.0)
    assert res["results"][0]["n_test"] == len(paired.indices("val"))
    assert "mean_probability" not in res["results"][0]


def test_prompts_seen_in_training_text():
    prompts = {"x": {"positive": ["There is nodule."], "negative": ["no nodule.", "no evidence of nodule."]}}
    seen = prompts_seen(prompts, ["Heart normal. No nodule. ", "There is a nodule.", "No nodule", ""])
    assert seen == {"no nodule.": 2}


def test_custom_prompt_file_with_label_templates(paired, tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"labels": {"nodule": {"phrases": ["nodule"], "positive": ["a {c} is seen."],
                                                        "negative": ["no {c}."]}}}))
    ps = load_prompts(f)
    assert class_prompts(ps.for_label("nodule"), "posneg") == {"positive": ["a nodule is seen."],
                                                               "negative": ["no nodule."]}
    model = ImageTextModel(FindingModel(), SIZE, "fake", device="cpu")
    res = evaluate_image_text("zeroshot", "fake", paired.root, labels="nodule", prompts=f, model=model)
    assert res["results"][0]["auroc"] == pytest.approx(1.0)


@pytest.mark.parametrize("content, fragment", [
    ("labels: [a, b]", "needs a mapping `labels:`"),
    ("labels: {nodule: []}", "labels.nodule must be a non-empty list"),
    ("labels: {nodule: [x]}\ntemplates: {positive: ['There is {d}.']}", "may only hold the placeholder"),
    ("labels: {nodule: {phrases: [x], extra: 1}}", "unknown keys"),
    ("labels: [unclosed", "not valid YAML"),
])
def test_bad_prompt_files_are_one_sentence(tmp_path, content, fragment):
    f = tmp_path / "bad.yaml"
    f.write_text(content)
    with pytest.raises(CxrclError, match="bad.yaml") as e:
        load_prompts(f)
    assert fragment in str(e.value)


def test_cli_errors(capsys, paired, tmp_path):
    out = tmp_path / "e.json"
    # a run of an image-only method
    run = tmp_path / "spcl_run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "spcl", "backbone": "resnet18", "image_size": 16}))
    code, _, err = run_cli(capsys, "eval", "zeroshot", "--run", run, "--data", paired.root, "--label", "nodule",
                           "--out", out)
    one_line_error(code, err, "spcl", "learns no text encoder", "clip, sista or maco")
    for spec in ("pixels", "random:resnet18"):
        code, _, err = run_cli(capsys, "eval", "retrieval", "--run", spec, "--data", paired.root, "--out", out)
        one_line_error(code, err, spec, "no text encoder")
    code, _, err = run_cli(capsys, "eval", "zeroshot", "--run", run, "--data", paired.root, "--out", out)
    one_line_error(code, err, "needs --label")
    code, _, err = run_cli(capsys, "eval", "linear", "--run", "pixels", "--data", paired.root, "--out", out)
    one_line_error(code, err, "needs --label")
    f = tmp_path / "p.yaml"
    f.write_text("labels: {effusion: [effusion]}")
    code, _, err = run_cli(capsys, "eval", "zeroshot", "--run", run, "--data", paired.root, "--label", "nodule",
                           "--prompts", f, "--out", out)
    one_line_error(code, err, "p.yaml", "no prompts for label 'nodule'", "effusion")
    assert not out.exists()


def test_errors_of_rows_and_labels(paired):
    model = ImageTextModel(FindingModel(), SIZE, "fake", device="cpu")
    with pytest.raises(CxrclError, match="no column 'nope'"):
        evaluate_image_text("zeroshot", "f", paired.root, labels="nodule", exclude_nonempty="nope", model=model)
    with pytest.raises(CxrclError, match="unknown label"):
        evaluate_image_text("zeroshot", "f", paired.root, labels="mass", model=model)
    with pytest.raises(CxrclError, match="choose train, val or test"):
        evaluate_image_text("zeroshot", "f", paired.root, labels="nodule", split="dev", model=model)


def test_exclude_nonempty_rows(tmp_path):
    ds = make_paired_dataset(tmp_path / "d")
    meta = ds.meta.copy()
    meta["copy_of"] = ["x" if i % 20 == 8 else "" for i in range(len(meta))]  # some test rows
    from cxrcl.data.writer import write_prepared
    ds2 = write_prepared(tmp_path / "d2", np.asarray(ds.images), meta, source="test",
                         label_names=ds.label_names, text_columns=["report"])
    model = ImageTextModel(FindingModel(), SIZE, "fake", device="cpu")
    res = evaluate_image_text("zeroshot", "f", ds2.root, labels="nodule", exclude_nonempty="copy_of", model=model)
    r = res["results"][0]
    assert r["n_excluded"] == 6 and r["n_test"] == len(ds2.indices("test")) - 6


def test_load_refuses_model_without_text_side():
    with pytest.raises(CxrclError, match="no encode_image/encode_text"):
        ImageTextModel(torch.nn.Linear(2, 2), SIZE, "lin")
    with pytest.raises(CxrclError, match="not a run directory"):
        load_image_text_model("/nonexistent/run")


def test_default_prompt_file_is_in_the_repository():
    assert DEFAULT_PROMPTS.is_file()


def test_bootstrap_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    from cxrcl.evaluation.zeroshot import _auroc_rows, bootstrap_ci

    rng = np.random.default_rng(1)
    y = (rng.random((5, 40)) < 0.4).astype(float)
    s = np.round(rng.normal(size=(5, 40)) + y, 1)  # rounded: ties
    np.testing.assert_allclose(_auroc_rows(y, s), [roc_auc_score(a, b) for a, b in zip(y, s, strict=True)])
    yy, ss = y[0][:, None], s[0][:, None]
    lo, hi = bootstrap_ci(yy, ss)
    assert lo < roc_auc_score(y[0], s[0]) < hi


@pytest.mark.parametrize("name", ["default", "report_style", "openi_pairing"])
def test_shipped_prompt_files_load_and_cover_the_phantom_findings(name):
    from cxrcl.data.phantom import FINDINGS
    from cxrcl.evaluation.zeroshot import load_prompts
    from tests.conftest import REPO

    prompts = load_prompts(REPO / "configs" / "prompts" / f"{name}.yaml")
    if name != "openi_pairing":
        assert set(FINDINGS) <= set(prompts.labels)
    for lp in prompts.labels.values():
        assert lp.phrases and lp.positive and lp.negative
