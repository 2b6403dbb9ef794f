import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrcl.cli import main
from cxrcl.data.writer import write_prepared
from cxrcl.errors import CxrclError
from cxrcl.evaluation.explain import (
    area_kept,
    attention_rollout,
    explain,
    random_area_kept,
    unit_map,
)
from cxrcl.methods.registry import build_method
from cxrcl.training.fit import pretrain
from tests.conftest import TINY_VIT

TRAIN = dict(steps=2, batch_size=16, log_every=1, progress=False)


@pytest.fixture(scope="module")
def lesion_ds(tmp_path_factory):
    """32 px noise with a bright 8x8 'lesion' (its mask) in half of the images."""
    rng = np.random.default_rng(0)
    n, size = 60, 32
    imgs = rng.integers(40, 90, (n, size, size), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(0, n, 2):
        y, x = rng.integers(0, 3, 2) * 8
        imgs[i, y:y + 8, x:x + 8] = 240
        masks[i, y:y + 8, x:x + 8] = 1
    meta = pd.DataFrame({"id": [f"img{i:03d}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
                         "split": ["train"] * 30 + ["val"] * 10 + ["test"] * 20,
                         "label_lesion": (masks.reshape(n, -1).max(1) > 0).astype(float)})
    return write_prepared(tmp_path_factory.mktemp("d") / "lesion", imgs, meta, source="test", masks=masks)


def test_area_kept_and_random_baseline():
    mask = np.zeros((32, 32), np.uint8)
    mask[:8, :8] = 1                                  # exactly token 0 of a 4x4 grid
    kept = np.zeros(16, bool)
    kept[0] = True
    assert area_kept(mask, kept, (4, 4)) == 1.0
    assert area_kept(mask, ~kept, (4, 4)) == 0.0
    assert unit_map(np.arange(4), (2, 2), 4).tolist() == [[0, 0, 1, 1]] * 2 + [[2, 2, 3, 3]] * 2
    mask[:16, :16] = 1                                # tokens 0, 1, 4, 5
    r = random_area_kept(mask, 8, (4, 4), np.random.default_rng(0), draws=400)
    assert r == pytest.approx(0.5, abs=0.05)          # a random half covers half on average


def test_attention_rollout_is_a_relevance_per_patch():
    torch.manual_seed(0)
    m = build_method("spcl", TINY_VIT, 32).eval()
    with torch.no_grad():
        r = attention_rollout(m.backbone, torch.randn(3, 1, 32, 32))
    assert r.shape == (3, 16) and bool((r > 0).all())


@pytest.mark.parametrize("spec", ["sparsecontrast:keep_ratio=0.5", "spcl"])
def test_explain_writes_overlays_and_lesion_metrics(lesion_ds, tmp_path, spec):
    run = tmp_path / "run"
    pretrain(spec, lesion_ds.root, run, backbone=TINY_VIT, train_overrides=TRAIN)
    out = tmp_path / "explain"
    r = explain(run, lesion_ds.root, out, n=6)
    saved = json.loads((out / "explain.json").read_text())
    assert saved == r
    assert r["n_images_with_masks"] == 10 and r["n_overlays"] == 6 and r["keep_ratio"] == 0.5
    assert r["source"] == ("attention rollout" if spec == "spcl" else "saliency predictor (sparsecontrast)")
    assert 0 <= r["lesion_area_kept"] <= 1 and r["random_area_kept"] == pytest.approx(0.5, abs=0.15)
    lo, hi = r["lesion_minus_random_ci95"]
    assert lo <= r["lesion_minus_random"] <= hi and lo < hi
    assert r["overlay_ids"][:5] == [f"img{i:03d}" for i in (40, 42, 44, 46, 48)]  # lesions first
    assert len(list((out / "images").glob("*.png"))) == 6
    w, h = Image.open(out / "overlays.png").size
    assert w > h > 0
    with pytest.raises(CxrclError, match="not empty"):
        explain(run, lesion_ds.root, out, n=6)


def test_cli_explain(lesion_ds, tmp_path, capsys):
    run = tmp_path / "run"
    pretrain("sparsecontrast", lesion_ds.root, run, backbone=TINY_VIT, train_overrides=TRAIN)
    assert main(["explain", "--run", str(run), "--data", str(lesion_ds.root), "--out",
                 str(tmp_path / "x"), "--n", "4", "--keep", "0.25"]) == 0
    assert "lesion area kept" in (said := capsys.readouterr().out) and "difference 95 % CI [" in said
    assert json.loads((tmp_path / "x" / "explain.json").read_text())["keep_ratio"] == 0.25
    assert main(["explain", "--run", str(tmp_path), "--data", str(lesion_ds.root),
                 "--out", str(tmp_path / "y")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_interrupted_explain_leaves_no_half_filled_output(lesion_ds, tmp_path, monkeypatch):
    import cxrcl.evaluation.explain as ex

    run = tmp_path / "run"
    pretrain("sparsecontrast", lesion_ds.root, run, backbone=TINY_VIT, train_overrides=TRAIN)
    out = tmp_path / "explain"

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "montage", killed)  # after the per-image overlays were written
    with pytest.raises(KeyboardInterrupt):
        explain(run, lesion_ds.root, out, n=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no --out, no staging folder
    monkeypatch.undo()
    out.mkdir()  # an empty folder the user made is fine
    r = explain(run, lesion_ds.root, out, n=4)
    assert (out / "explain.json").is_file() and r["n_overlays"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explain", "run"]
