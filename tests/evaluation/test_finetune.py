"""End-to-end fine-tuning (cxrcl.evaluation.finetune) on a tiny ViT at 32 px."""

import json

import numpy as np
import pytest
import torch

from cxrcl.cli import main
from cxrcl.encoders import load_encoder
from cxrcl.errors import CxrclError
from cxrcl.evaluation import finetune as ft
from cxrcl.evaluation.linear import linear_probe
from cxrcl.evaluation.protocol import evaluate
from cxrcl.models.backbones import create_backbone

from ..conftest import TINY_VIT
from .conftest import pixel_extractor

FAST = {"max_epochs": 3, "patience": 2, "lr": 1e-3, "batch_size": 32, "min_steps_per_epoch": 4}


@pytest.fixture(scope="module")
def encoder(visible_ds):
    return load_encoder("random:" + TINY_VIT, visible_ds.size, device="cpu")


def test_finetune_json_same_rows_as_linear_and_learns(visible_ds, encoder):
    before = {k: v.clone() for k, v in encoder.backbone.state_dict().items()}
    res = ft.finetune(visible_ds, encoder, ["square", "bar"], fractions=(0.1, 1.0), seeds=2,
                      run_name="random:tiny", config=FAST)
    lin = linear_probe(visible_ds, pixel_extractor, ["square", "bar"], fractions=(0.1, 1.0), seeds=2)
    assert res["task"] == "finetune" and res["labels"] == ["square", "bar"]
    assert set(res["summary"]) == {"0.1", "1.0"} and res["summary"]["1.0"]["n_seeds"] == 2
    for key in ("n_train", "n_train_per_label", "n_val", "n_val_per_label"):
        assert [r[key] for r in res["results"]] == [r[key] for r in lin["results"]]
    for r in res["results"]:
        assert 1 <= r["best_epoch"] <= r["epochs_run"] <= FAST["max_epochs"]
        assert r["auroc_ci"][0] <= r["auroc"] <= r["auroc_ci"][1]
        assert np.isclose(r["auroc"], np.mean(list(r["auroc_per_label"].values())))
    # the dark bar at a fixed column is learnable from random init within the budget
    assert res["summary"]["1.0"]["auroc_per_label_mean"]["bar"] > 0.8
    json.dumps(res, allow_nan=False)
    after = encoder.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the encoder is copied, not changed


def test_no_test_image_is_read_for_training_or_early_stopping(visible_ds, encoder, monkeypatch):
    test_rows = set(visible_ds.indices("test").tolist())
    val_split = set(visible_ds.indices("val").tolist())
    train_split = set(visible_ds.indices("train").tolist())
    read_in_training, calls = set(), []
    real_read, real_train = ft._read, ft.train_one

    def spy_read(ds, rows):
        if calls and calls[-1] == "training":
            read_in_training.update(np.asarray(rows).tolist())
        return real_read(ds, rows)

    def spy_train(ds, backbone, dim, size, train_rows, y_train, val_rows, y_val, *a, **k):
        assert set(train_rows.tolist()) <= train_split and set(val_rows.tolist()) <= val_split
        calls.append("training")
        try:
            return real_train(ds, backbone, dim, size, train_rows, y_train, val_rows, y_val, *a, **k)
        finally:
            calls.append("done")

    monkeypatch.setattr(ft, "_read", spy_read)
    monkeypatch.setattr(ft, "train_one", spy_train)
    ft.finetune(visible_ds, encoder, "square", fractions=(0.05,), seeds=1,
                config={**FAST, "max_epochs": 1})
    assert read_in_training and not (read_in_training & test_rows)
    assert read_in_training <= train_split | val_split


def test_early_stopping_keeps_the_best_epoch(visible_ds, encoder):
    rows = {s: visible_ds.indices(s) for s in ("train", "val")}
    y = {s: visible_ds.labels(["square"], rows[s]) for s in rows}
    cfg = ft.FinetuneConfig(max_epochs=6, patience=1, lr=3e-3, min_steps_per_epoch=3)
    import copy

    model, rec = ft.train_one(visible_ds, copy.deepcopy(encoder.backbone), encoder.dim,
                              encoder.image_size, rows["train"], y["train"], rows["val"], y["val"],
                              cfg, seed=0, device=torch.device("cpu"))
    assert rec["epochs_run"] <= 6 and rec["best_epoch"] <= rec["epochs_run"]
    if rec["epochs_run"] < 6:  # stopped early: exactly `patience` epochs after the best one
        assert rec["epochs_run"] - rec["best_epoch"] == 1
    logits = ft._predict(model, ft._read(visible_ds, rows["val"]), encoder.image_size, torch.device("cpu"))
    val_auc, _ = ft._val_metrics(logits, y["val"])
    assert val_auc == pytest.approx(rec["val_auroc"], abs=1e-6)  # the kept weights are the best epoch's


@pytest.mark.parametrize("spec", [TINY_VIT, "resnet18"])
def test_layer_decay_groups(spec):
    b = create_backbone(spec, 32)
    model = ft._Classifier(b, b.dim, 2)
    opt = ft._optimizer(model, ft.FinetuneConfig(layer_decay=0.5, lr=1e-3, head_lr_scale=1.0))
    covered = [p for g in opt.param_groups for p in g["params"]]
    assert len(covered) == len({id(p) for p in covered}) == len(list(model.parameters()))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    stem = b.vit.patch_embed.proj.weight if spec == TINY_VIT else b.stem[0].weight
    assert lr_of[id(model.head.weight)] == pytest.approx(1e-3)
    assert lr_of[id(stem)] < lr_of[id(model.head.weight)] / 2  # the lowest layer learns slowest
    flat = ft._optimizer(model, ft.FinetuneConfig(lr=1e-3, head_lr_scale=1.0))
    assert {g["lr"] for g in flat.param_groups} == {1e-3}


def test_user_mistakes_are_one_sentence(visible_ds, tmp_path, capsys):
    with pytest.raises(CxrclError, match="pixel floor"):
        evaluate("finetune", "pixels", visible_ds.root, "square", tmp_path / "x.json")
    with pytest.raises(CxrclError, match="layer-decay"):
        ft.FinetuneConfig(layer_decay=1.5)
    assert main(["eval", "linear", "--run", "pixels", "--data", str(visible_ds.root), "--label",
                 "square", "--out", str(tmp_path / "y.json"), "--max-epochs", "2"]) == 2
    assert "eval finetune` only" in capsys.readouterr().err


def test_cli_finetune(visible_ds, tmp_path, capsys):
    out = tmp_path / "ft.json"
    rc = main(["eval", "finetune", "--run", "random:" + TINY_VIT, "--data", str(visible_ds.root),
               "--label", "bar", "--out", str(out), "--fractions", "1.0", "--seeds", "1",
               "--max-epochs", "2", "--patience", "1", "--lr", "1e-3", "--layer-decay", "0.75"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert res["task"] == "finetune" and res["protocol"]["config"]["layer_decay"] == 0.75
    assert res["test_scores"]["file"] == "ft.scores.npz" and (tmp_path / "ft.scores.npz").is_file()
    assert "finetune random:" in capsys.readouterr().out
