"""Every mistake a careless user makes with `cxrcl pretrain` ends in one sentence and a non-zero
exit, before a run directory is made (no traceback, nothing written)."""

from __future__ import annotations

import pytest

from cxrcl.cli import main
from tests.conftest import TINY_VIT
from tests.test_cli import assert_one_line_error

BASE = ["--backbone", TINY_VIT, "--batch-size", "16", "--no-progress"]


def pretrain_cli(capsys, ds, run, *args, method="spcl"):
    code = main(["pretrain", method, "--data", str(ds.root), "--out", str(run), *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args,fragment", [
    (["--steps", "0"], "steps=0"),
    (["--steps", "-5"], "steps=-5"),
    (["--epochs", "0"], "epochs=0"),
    (["--epochs", "-1"], "epochs=-1"),
    (["--epochs", "nan"], "epochs=nan"),
    (["--epochs", "inf"], "epochs=inf"),
    (["--steps", "2", "--lr", "-1"], "lr=-1"),
    (["--steps", "2", "--lr", "nan"], "lr=nan"),
    (["--steps", "2", "--batch-size", "0"], "batch_size=0"),
    (["--steps", "2", "--batch-size", "-1"], "batch_size=-1"),
    (["--steps", "2", "--log-every", "0"], "log_every=0"),
    (["--steps", "2", "--checkpoint-every", "0"], "checkpoint_every=0"),
    (["--steps", "2", "--devices", "0"], "devices=0"),
    (["--steps", "2", "--seed", "-1"], "seed=-1"),
    (["--steps", "2", "--precision", "fp8"], "precision='fp8'"),
    (["--steps", "2", "--stop-after", "0"], "--stop-after 0"),
    (["--steps", "2", "--stop-after", "-1"], "--stop-after -1"),
    (["--steps", "2", "--image-size", "0"], "image_size=0"),
    (["--steps", "2", "--num-nodes", "2"], "--num-nodes 2"),
])
def test_bad_values_are_one_sentence_and_write_nothing(capsys, tiny_ds, tmp_path, args, fragment):
    run = tmp_path / "run"
    code, _, err = pretrain_cli(capsys, tiny_ds, run, *BASE, *args)
    assert_one_line_error(code, err, fragment)
    assert not run.exists()


@pytest.mark.parametrize("text,fragment", [
    ("train:\n  steps: ten\n", "steps='ten' must be a whole number"),
    ("train:\n  lr: fast\n", "lr='fast' must be a number"),
    ("train: 5\n", "must be a mapping"),
    ("image_size: '64'\n", "image_size='64'"),
    ("train:\n  stepz: 3\n", "train key stepz"),
    ("train: [unclosed\n", "not valid YAML"),
    ("- a list\n", "must hold a mapping"),
])
def test_bad_config_files(capsys, tiny_ds, tmp_path, text, fragment):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    code, _, err = pretrain_cli(capsys, tiny_ds, tmp_path / "run", *BASE, "--config", cfg)
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "run").exists()


def test_a_directory_as_config(capsys, tiny_ds, tmp_path):
    code, _, err = pretrain_cli(capsys, tiny_ds, tmp_path / "run", *BASE, "--config", tmp_path)
    assert_one_line_error(code, err, "is a directory")


def test_a_block_partition_that_does_not_divide_the_grid_fails_before_the_run_starts(capsys, tiny_ds, tmp_path):
    # 32 px images with 8 px patches: a 4x4 grid; blocks of 3 do not divide it
    run = tmp_path / "run"
    code, _, err = pretrain_cli(capsys, tiny_ds, run, *BASE, "--steps", "2",
                                method="spcl:partition=block:block=3")
    assert_one_line_error(code, err, "block=3 does not divide the 4x4 token grid")
    assert not run.exists()


def test_a_folder_of_the_users_is_never_used_as_a_run_directory(capsys, tiny_ds, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    code, _, err = pretrain_cli(capsys, tiny_ds, mine, *BASE, "--steps", "2")
    assert_one_line_error(code, err, "other files")
    assert (mine / "notes.txt").read_text() == "precious" and len(list(mine.iterdir())) == 1


def test_an_unwritable_output_folder(capsys, tiny_ds, tmp_path):
    import os

    if os.geteuid() == 0:  # root writes anywhere; use a path under a file instead
        blocker = tmp_path / "file"
        blocker.write_text("x")
        code, _, err = pretrain_cli(capsys, tiny_ds, blocker / "run", *BASE, "--steps", "2")
        assert_one_line_error(code, err, str(blocker))
        return
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code, _, err = pretrain_cli(capsys, tiny_ds, ro / "run", *BASE, "--steps", "2")
    assert_one_line_error(code, err, "not writable")
