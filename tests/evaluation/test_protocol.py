"""``cxrcl eval`` end to end on a run: another input size than the run was trained at."""

import json

import numpy as np
import pytest

from cxrcl.cli import main
from cxrcl.training.fit import pretrain
from tests.conftest import TINY_VIT, make_tiny


@pytest.fixture(scope="module")
def run64(tmp_path_factory):
    root = tmp_path_factory.mktemp("run64")
    ds = make_tiny(root / "data", n=120, size=64)
    pretrain("spcl", ds.root, root / "run", backbone=TINY_VIT, image_size=64,
             train_overrides={"steps": 1, "batch_size": 16, "progress": False})
    return ds, root / "run"


def test_eval_a_64px_vit_run_at_32px(run64, tmp_path, capsys):
    ds, run = run64
    out = tmp_path / "e.json"
    code = main(["eval", "linear", "--run", str(run), "--data", str(ds.root), "--label", "all",
                 "--out", str(out), "--image-size", "32", "--fractions", "1.0", "--seeds", "1"])
    assert code == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert res["input_size"]["trained_image_size"] == 64 and res["input_size"]["image_size"] == 32
    assert "resampled" in res["input_size"]["position_embedding"]
    assert res["feature_dim"] == 192 and np.isfinite(res["results"][0]["auroc"])


def test_size_that_does_not_fit_the_patches_is_one_sentence(run64, tmp_path, capsys):
    ds, run = run64
    code = main(["eval", "linear", "--run", str(run), "--data", str(ds.root), "--label", "all",
                 "--out", str(tmp_path / "e.json"), "--image-size", "36"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "multiple of the patch size" in err


def test_val_labels_flag(tiny_ds, tmp_path, capsys):
    out = tmp_path / "e.json"
    base = ["--run", "pixels", "--data", str(tiny_ds.root), "--label", "all", "--out", str(out),
            "--fractions", "0.1", "--seeds", "1"]
    assert main(["eval", "linear", *base, "--val-labels", "full"]) == 0
    res = json.loads(out.read_text())
    assert res["protocol"]["val_labels"].startswith("full")
    assert res["results"][0]["n_val"] == len(tiny_ds.indices("val"))
    assert main(["eval", "linear", *base]) == 0
    assert json.loads(out.read_text())["results"][0]["n_val"] < len(tiny_ds.indices("val"))
    capsys.readouterr()
    assert main(["eval", "knn", *base, "--val-labels", "full"]) == 2
    err = capsys.readouterr().err
    assert "applies to linear and finetune only" in err and "Traceback" not in err
