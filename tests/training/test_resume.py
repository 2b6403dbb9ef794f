"""--resume: honours a longer schedule, refuses other changes by name, leaves a finished run
alone, and names a damaged run's file in one sentence."""

from __future__ import annotations

import json

import pytest
import yaml

from cxrcl.cli import main
from cxrcl.errors import CxrclError
from cxrcl.training.checkpoint import latest_checkpoint
from cxrcl.training.fit import pretrain
from tests.conftest import TINY_VIT, make_tiny
from tests.test_cli import assert_one_line_error

TRAIN = dict(steps=4, batch_size=16, log_every=1, checkpoint_every=2, progress=False)


@pytest.fixture
def finished(tiny_ds, tmp_path):
    run = tmp_path / "run"
    pretrain("spcl", tiny_ds.root, run, backbone=TINY_VIT, train_overrides=TRAIN)
    return run


def _snapshot(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resuming_a_finished_run_says_so_and_changes_nothing(capsys, tiny_ds, finished):
    before = _snapshot(finished)
    code = main(["pretrain", "spcl", "--data", str(tiny_ds.root), "--out", str(finished), "--resume"])
    out, _ = capsys.readouterr()
    assert code == 0 and "already complete (4/4 steps)" in out
    assert _snapshot(finished) == before


def test_a_longer_steps_extends_the_run(tiny_ds, finished):
    s = pretrain("spcl", tiny_ds.root, finished, resume=True, train_overrides={"steps": 6})
    assert s["steps"] == 6 and s["complete"]
    cfg = yaml.safe_load((finished / "config.yaml").read_text())
    assert cfg["train"]["steps"] == 6 and cfg["steps_total"] == 6
    assert [json.loads(x)["step"] for x in open(finished / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(method="simclr"), "cannot change the method"),
    (dict(method="spcl:ratios=0.4,0.4"), "cannot change method setting ratios"),
    (dict(backbone="vit_tiny_patch16_224:patch_size=16"), "cannot change the backbone"),
    (dict(image_size=64), "cannot change the image size"),
    (dict(train_overrides={"lr": 0.1}), "cannot change lr"),
    (dict(train_overrides={"batch_size": 8}), "cannot change batch_size"),
    (dict(train_overrides={"seed": 3}), "cannot change seed"),
    (dict(train_overrides={"steps": 2}), "cannot shorten the run to 2 steps"),
])
def test_conflicting_arguments_are_refused_by_name(tiny_ds, finished, kwargs, fragment):
    before = _snapshot(finished)
    method = kwargs.pop("method", "spcl")
    with pytest.raises(CxrclError, match=fragment):
        pretrain(method, tiny_ds.root, finished, resume=True, **kwargs)
    assert _snapshot(finished) == before


def test_another_data_set_is_refused(tiny_ds, finished, tmp_path):
    other = make_tiny(tmp_path / "other", seed=5)
    with pytest.raises(CxrclError, match="is not the data set"):
        pretrain("spcl", other.root, finished, resume=True)


def test_a_run_on_another_precision_says_so(tiny_ds, finished, capsys):
    cfg = yaml.safe_load((finished / "config.yaml").read_text())
    assert cfg["runtime"] == {"device": "cpu", "device_type": "cpu", "precision": "32-true", "world_size": 1}
    assert cfg["train"]["precision"] == "auto"
    pretrain("spcl", tiny_ds.root, finished, resume=True,
             train_overrides={"steps": 5, "precision": "bf16-mixed"})
    out, _ = capsys.readouterr()
    assert "trained with precision 32-true; this resume runs with bf16-mixed" in out
    cfg = yaml.safe_load((finished / "config.yaml").read_text())
    assert cfg["runtime"]["precision"] == "bf16-mixed" and cfg["runtime_history"][0]["precision"] == "32-true"


def _half(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage,fragment", [
    (lambda d: _half(d / "model.safetensors"), "model.safetensors is missing or truncated"),
    (lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors is missing or truncated"),
    (lambda d: _half(d / "state.safetensors"), "state.safetensors is missing or truncated"),
    (lambda d: (d / "state.safetensors").unlink(), "state.safetensors is missing or truncated"),
    (lambda d: (d / "state.json").write_text("{"), "state.json is missing or damaged"),
    (lambda d: (d.parent.parent / "config.yaml").write_text("method: [\n"), "config.yaml is not valid YAML"),
    (lambda d: (d.parent.parent / "config.yaml").write_text(""), "not a cxrcl run config"),
])
def test_a_damaged_run_is_one_sentence(capsys, tiny_ds, tmp_path, damage, fragment):
    run = tmp_path / "run"
    pretrain("spcl", tiny_ds.root, run, backbone=TINY_VIT, train_overrides=dict(TRAIN, steps=2))
    damage(latest_checkpoint(run / "checkpoints"))
    code = main(["pretrain", "spcl", "--data", str(tiny_ds.root), "--out", str(run), "--resume",
                 "--steps", "4"])
    _, err = capsys.readouterr()
    assert_one_line_error(code, err, fragment)


def test_a_checkpoint_of_another_backbone_copied_in(capsys, tiny_ds, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    pretrain("spcl", tiny_ds.root, a, backbone=TINY_VIT, train_overrides=dict(TRAIN, steps=2))
    pretrain("spcl", tiny_ds.root, b, backbone="vit_tiny_patch16_224:patch_size=8:depth=1",
             train_overrides=dict(TRAIN, steps=2))
    src = latest_checkpoint(b / "checkpoints") / "model.safetensors"
    dst = latest_checkpoint(a / "checkpoints") / "model.safetensors"
    dst.unlink()
    dst.write_bytes(src.read_bytes())
    meta = json.loads((dst.parent / "state.json").read_text())
    meta["sizes"]["model.safetensors"] = dst.stat().st_size
    (dst.parent / "state.json").write_text(json.dumps(meta))
    code = main(["pretrain", "spcl", "--data", str(tiny_ds.root), "--out", str(a), "--resume", "--steps", "4"])
    _, err = capsys.readouterr()
    assert_one_line_error(code, err, "another backbone")
    code = main(["eval", "linear", "--run", str(a), "--data", str(tiny_ds.root), "--label", "bright",
                 "--out", str(tmp_path / "e.json"), "--seeds", "1", "--fractions", "1.0"])
    _, err = capsys.readouterr()
    assert_one_line_error(code, err, "another backbone")


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tiny_ds, tmp_path, monkeypatch):
    import errno

    import cxrcl.training.checkpoint as ckpt

    run = tmp_path / "run"
    pretrain("spcl", tiny_ds.root, run, backbone=TINY_VIT, train_overrides=TRAIN)
    real = ckpt.save_file

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", full)
    with pytest.raises(CxrclError, match="no space left.*step-00000004 is intact.*--resume"):
        pretrain("spcl", tiny_ds.root, run, resume=True, train_overrides={"steps": 6})
    assert latest_checkpoint(run / "checkpoints").name == "step-00000004"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(ckpt, "save_file", real)
    assert pretrain("spcl", tiny_ds.root, run, resume=True, train_overrides={"steps": 6})["steps"] == 6
