"""cxrcl eval segment: Dice against a reference, no test image in training or early stopping,
a data set without masks refused in one line, and a learnable mask is learned."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cxrcl.cli import main
from cxrcl.data.writer import write_prepared
from cxrcl.evaluation import segment as seg
from cxrcl.models.backbones import create_backbone

BACKBONE = "vit_tiny_patch16_224:patch_size=8:depth=2:embed_dim=48:num_heads=3"


def make_square_masks(out, n: int = 80, size: int = 32, seed: int = 0, masks: bool = True):
    """A bright square at a random place; its mask is the square. 60/20/20 split by row."""
    rng = np.random.default_rng(seed)
    img = rng.normal(60, 8, (n, size, size))
    m = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        y, x = rng.integers(0, size - 12, 2)
        img[i, y:y + 12, x:x + 12] += 120
        m[i, y:y + 12, x:x + 12] = 1
    split = np.array(["train"] * 6 + ["val"] * 2 + ["test"] * 2)[np.arange(n) % 10]
    meta = pd.DataFrame({"id": [f"i{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
                         "split": split, "has_mask": 1, "label_x": (np.arange(n) % 2).astype(float)})
    return write_prepared(out, np.clip(img, 0, 255).astype(np.uint8), meta, source="synthetic",
                          label_names=["x"], masks=m if masks else None)


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    return make_square_masks(tmp_path_factory.mktemp("seg") / "squares")


def reference_dice(p: np.ndarray, t: np.ndarray) -> float:
    return 2 * np.logical_and(p, t).sum() / (p.sum() + t.sum())


def test_dice_matches_reference():
    rng = np.random.default_rng(1)
    p = rng.random((5, 16, 16)) < 0.4
    t = rng.random((5, 16, 16)) < 0.3
    got = seg.dice_per_image(torch.from_numpy(p), torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(got, [reference_dice(p[i], t[i]) for i in range(5)], rtol=1e-6)
    assert seg.dice_pooled(torch.from_numpy(p), torch.from_numpy(t)) == pytest.approx(reference_dice(p, t), rel=1e-6)
    # identical maps -> 1, disjoint -> 0
    assert seg.dice_per_image(torch.from_numpy(t), torch.from_numpy(t)).tolist() == [1.0] * 5
    assert seg.dice_pooled(torch.from_numpy(t), torch.from_numpy(~t)) == 0.0


def test_vit_levels_and_head_shape():
    bb = create_backbone(BACKBONE, 32)
    levels = seg.feature_levels(bb, torch.zeros(2, 1, 32, 32))
    assert [lv.shape for lv in levels] == [torch.Size([2, 48, 4, 4])] * 2  # depth 2 -> cuts after 1 and 2
    head = seg.SegmentationHead([48, 48], 4, 32)
    assert head(levels, 32).shape == (2, 32, 32)
    assert seg.vit_cut_points(12) == [3, 6, 9, 12]


def test_sparse_encoder_is_segmented_densely():
    """A SparseContrast encoder gives its backbone's full maps (no token is pruned for segmentation)."""
    from cxrcl.models.saliency import SaliencyPredictor, SparseEncoder

    bb = create_backbone(BACKBONE, 32)
    sparse = SparseEncoder(bb, SaliencyPredictor(bb.dim), prune_at=1, keep_ratio=0.5).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        got, want = seg.feature_levels(sparse, x), seg.feature_levels(bb, x)
    assert [g.shape for g in got] == [w.shape for w in want] == [torch.Size([2, 48, 4, 4])] * 2
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_segment_json_says_a_sparse_encoder_ran_dense(squares):
    from cxrcl.models.saliency import SaliencyPredictor, SparseEncoder

    bb = create_backbone(BACKBONE, 32)
    sparse = SparseEncoder(bb, SaliencyPredictor(bb.dim), prune_at=1, keep_ratio=0.5).eval()
    res = seg.segmentation_probe(squares, sparse, 32, fractions=(1.0,), seeds=1, steps=1, eval_every=1)
    assert "SparseContrast encoder segmented densely" in res["protocol"]["tokens"]
    plain = seg.segmentation_probe(squares, bb, 32, fractions=(1.0,), seeds=1, steps=1, eval_every=1)
    assert plain["protocol"]["tokens"] == "every token"


def test_no_test_image_in_training_or_early_stopping(squares, monkeypatch):
    seen = []
    orig = seg.SegmentationProbe.fit

    def spy(self, train, train_pos, val, val_pos, seed):
        seen.append((set(train.rows[train_pos].tolist()), set(val.rows[val_pos].tolist())))
        return orig(self, train, train_pos, val, val_pos, seed)

    monkeypatch.setattr(seg.SegmentationProbe, "fit", spy)
    torch.manual_seed(0)
    res = seg.segmentation_probe(squares, create_backbone(BACKBONE, 32), 32, fractions=(0.1, 1.0), seeds=2,
                                 steps=4, eval_every=2)
    test_rows = set(squares.indices("test").tolist())
    train_rows, val_rows = set(squares.indices("train").tolist()), set(squares.indices("val").tolist())
    assert len(seen) == 4
    for tr, va in seen:
        assert tr <= train_rows and va <= val_rows and not (tr | va) & test_rows
    small = [r for r in res["results"] if r["fraction"] == 0.1]
    full = [r for r in res["results"] if r["fraction"] == 1.0]
    assert all(set(s["train_rows"]) <= set(f["train_rows"]) for s, f in zip(small, full, strict=True))  # nested
    assert full[0]["n_train"] == len(train_rows) and small[0]["n_train"] == 5
    assert res["results"][0]["n_test"] == len(test_rows)


def test_learns_a_visible_mask(squares):
    torch.manual_seed(0)
    res = seg.segmentation_probe(squares, create_backbone(BACKBONE, 32), 32, fractions=(1.0,), seeds=1,
                                 steps=150, eval_every=25)
    # a 12x12 square in a 32x32 image: predicting everything gives Dice ~0.25, nothing 0
    assert res["results"][0]["dice"] > 0.6
    assert res["summary"]["1.0"]["dice_mean"] == res["results"][0]["dice"]


def test_early_stopping_keeps_training_while_dice_is_zero_but_val_loss_falls(squares, monkeypatch):
    """Small lesions give val Dice 0 for a while: a falling val loss counts as a gain (the head
    trains on and the latest state is kept); a flat one stops after ``patience`` checks."""
    for losses, steps_run, best_step in (([5.0 - 0.1 * i for i in range(20)], 40, 40), ([5.0] * 20, 12, 2)):
        calls = iter(losses)
        monkeypatch.setattr(seg.SegmentationProbe, "val_scores", lambda *a, calls=calls, **k: (0.0, next(calls)))
        res = seg.segmentation_probe(squares, create_backbone(BACKBONE, 32), 32, fractions=(1.0,), seeds=1,
                                     steps=40, eval_every=2, patience=5)
        r = res["results"][0]
        assert (r["steps_run"], r["best_step"]) == (steps_run, best_step)


def test_cli_segment_writes_json_and_refuses_no_masks(squares, tmp_path, capsys):
    out = tmp_path / "seg.json"
    rc = main(["eval", "segment", "--run", f"random:{BACKBONE}", "--data", str(squares.root), "--out", str(out),
               "--fractions", "1.0", "--seeds", "1", "--head-steps", "3"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["task"] == "segment" and 0.0 <= res["results"][0]["dice"] <= 1.0
    assert res["protocol"]["encoder"] == "frozen"

    bare = make_square_masks(tmp_path / "bare", n=20, masks=False)
    rc = main(["eval", "segment", "--run", f"random:{BACKBONE}", "--data", str(bare.root),
               "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "no masks.npy" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    rc = main(["eval", "segment", "--run", "pixels", "--data", str(squares.root), "--out", str(tmp_path / "y.json")])
    assert rc != 0 and "pixels" in capsys.readouterr().err


def test_finetune_changes_the_encoder_copy_only(squares):
    torch.manual_seed(0)
    bb = create_backbone(BACKBONE, 32)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    res = seg.segmentation_probe(squares, bb, 32, fractions=(1.0,), seeds=1, steps=3, eval_every=1, finetune=True)
    assert res["protocol"]["encoder"].startswith("fine-tuned")
    assert all(torch.equal(before[k], v) for k, v in bb.state_dict().items())
