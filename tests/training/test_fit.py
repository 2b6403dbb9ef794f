import json

import pytest
import torch

from cxrcl.errors import CxrclError
from cxrcl.methods.spcl import SPCL
from cxrcl.training.fit import pretrain
from tests.conftest import TINY_VIT

TRAIN = dict(steps=8, batch_size=16, log_every=1, checkpoint_every=4, progress=False)


def losses(run):
    return [json.loads(line)["loss"] for line in open(run / "metrics.jsonl")]


def test_run_directory_and_exact_resume(tiny_ds, tmp_path):
    full = tmp_path / "full"
    s = pretrain("spcl", tiny_ds.root, full, backbone=TINY_VIT, train_overrides=TRAIN)
    assert s["steps"] == 8 and s["complete"] and s["images_per_s"] > 0
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "environment.json",
                 "checkpoints/last.safetensors", "checkpoints/step-00000008/state.safetensors",
                 "checkpoints/step-00000008/state.json"):
        assert (full / name).exists(), name
    part = tmp_path / "part"
    pretrain("spcl", tiny_ds.root, part, backbone=TINY_VIT, train_overrides=TRAIN, stop_after=3)
    assert json.loads((part / "summary.json").read_text())["complete"] is False
    pretrain("spcl", tiny_ds.root, part, resume=True)
    # checkpoint at step 3 (end of the first invocation) -> steps 4..8 replayed exactly
    assert losses(full) == losses(part)


def test_existing_run_needs_resume_and_resume_needs_a_run(tiny_ds, tmp_path):
    run = tmp_path / "r"
    pretrain("simclr", tiny_ds.root, run, backbone=TINY_VIT, train_overrides=dict(TRAIN, steps=2))
    with pytest.raises(CxrclError, match="--resume"):
        pretrain("simclr", tiny_ds.root, run, backbone=TINY_VIT, train_overrides=TRAIN)
    with pytest.raises(CxrclError, match="nothing to resume"):
        pretrain("simclr", tiny_ds.root, tmp_path / "empty", resume=True)


def _poison(monkeypatch, bad_steps):
    """Make SPCL's loss NaN at the given (0-based) steps."""
    real = SPCL.training_step

    def poisoned(self, images, generator):
        out = real(self, images, generator)
        if self.step in bad_steps:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(SPCL, "training_step", poisoned)


def test_a_nan_loss_skips_the_step_and_is_counted(tiny_ds, tmp_path, monkeypatch):
    _poison(monkeypatch, {2, 5})
    run = tmp_path / "nan"
    s = pretrain("spcl", tiny_ds.root, run, backbone=TINY_VIT, train_overrides=TRAIN)
    assert s["complete"] and s["skipped_steps"] == 2
    records = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["step"] for r in records if r["skipped"]] == [3, 6]
    assert records[-1]["skipped_total"] == 2
    assert all(torch.isfinite(p).all() for p in _weights(run).values())


def test_a_skipped_step_does_not_change_the_weights(tiny_ds, tmp_path, monkeypatch):
    _poison(monkeypatch, {2})
    run = tmp_path / "one"
    pretrain("spcl", tiny_ds.root, run, backbone=TINY_VIT,
             train_overrides=dict(TRAIN, steps=3, checkpoint_every=2))
    w2 = _weights(run, "step-00000002")
    w3 = _weights(run, "step-00000003")
    assert all(torch.equal(w2[k], w3[k]) for k in w2)


def test_consecutive_bad_steps_stop_the_run_and_keep_the_last_good_checkpoint(tiny_ds, tmp_path, monkeypatch):
    _poison(monkeypatch, set(range(4, 100)))
    run = tmp_path / "nan"
    with pytest.raises(CxrclError, match="not finite for 3 steps in a row.*last good checkpoint.*intact"):
        pretrain("spcl", tiny_ds.root, run, backbone=TINY_VIT,
                 train_overrides=dict(TRAIN, checkpoint_every=2, max_bad_steps=3))
    # the checkpoint at step 6 was taken during the bad streak: it holds the weights of step 4
    w4, w6 = _weights(run, "step-00000004"), _weights(run, "step-00000006")
    assert all(torch.equal(w4[k], w6[k]) for k in w4)


def _weights(run, step_dir=None):
    from safetensors.torch import load_file

    from cxrcl.training.checkpoint import latest_checkpoint

    d = run / "checkpoints" / step_dir if step_dir else latest_checkpoint(run / "checkpoints")
    return load_file(str(d / "model.safetensors"))


def test_steps_win_over_epochs_from_any_source(tiny_ds, tmp_path):
    from cxrcl.training.fit import resolve_run_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: 7\n")
    assert resolve_run_config("spcl", tiny_ds, config_file=cfg).train.epochs == 7
    run = resolve_run_config("spcl", tiny_ds, config_file=cfg, train_overrides={"steps": 5})
    assert run.train.steps == 5 and run.train.epochs is None
    assert resolve_run_config("spcl", tiny_ds).train.epochs == 10.0


def test_bf16_mixed_runs_the_training_step_under_autocast(tiny_ds, tmp_path, monkeypatch):
    """--precision bf16-mixed on CPU: the method's training step runs under bf16 autocast (Fabric
    only wraps forward()), so its losses differ from a 32-true run's; 32-true has no autocast."""
    seen = []
    real = SPCL.training_step

    def spy(self, images, generator):
        seen.append(torch.is_autocast_enabled("cpu"))
        return real(self, images, generator)

    monkeypatch.setattr(SPCL, "training_step", spy)
    train = dict(TRAIN, steps=2, checkpoint_every=2)
    pretrain("spcl", tiny_ds.root, tmp_path / "fp32", backbone=TINY_VIT, train_overrides=train)
    assert seen == [False, False]
    pretrain("spcl", tiny_ds.root, tmp_path / "bf16", backbone=TINY_VIT,
             train_overrides=dict(train, precision="bf16-mixed"))
    assert seen[2:] == [True, True]
    assert losses(tmp_path / "bf16") != losses(tmp_path / "fp32")
