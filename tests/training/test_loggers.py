"""``cxrcl pretrain --logger``: Fabric's CSV / TensorBoard loggers get what metrics.jsonl gets."""

import csv
import json

import pytest

from cxrcl.cli import main
from cxrcl.errors import CxrclError
from cxrcl.training.fit import pretrain
from cxrcl.training.loggers import check_logger
from tests.conftest import TINY_VIT

ARGS = ["--backbone", TINY_VIT, "--batch-size", "16", "--log-every", "1", "--no-progress"]


def test_csv_logger_writes_the_loss_column(tiny_ds, tmp_path):
    out = tmp_path / "run"
    assert main(["pretrain", "simclr", "--data", str(tiny_ds.root), "--out", str(out), "--steps", "3",
                 "--logger", "csv", *ARGS]) == 0
    rows = list(csv.DictReader(open(out / "logs" / "csv" / "version_0" / "metrics.csv")))
    jsonl = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [int(r["step"]) for r in rows] == [r["step"] for r in jsonl] == [1, 2, 3]
    assert [float(r["loss"]) for r in rows] == pytest.approx([r["loss"] for r in jsonl])
    assert "lr" in rows[0] and "images_per_s" in rows[0]
    # a resume opens the next version folder and keeps the first
    assert main(["pretrain", "simclr", "--data", str(tiny_ds.root), "--out", str(out), "--steps", "4",
                 "--resume", "--logger", "csv", "--no-progress"]) == 0
    later = list(csv.DictReader(open(out / "logs" / "csv" / "version_1" / "metrics.csv")))
    assert [int(r["step"]) for r in later] == [4]
    assert (out / "logs" / "csv" / "version_0" / "metrics.csv").is_file()


def test_tensorboard_logger(tiny_ds, tmp_path):
    pytest.importorskip("tensorboard", reason="the logging extra (tensorboard) is not installed")
    out = tmp_path / "run"
    pretrain("simclr", tiny_ds.root, out, backbone=TINY_VIT,
             train_overrides={"steps": 2, "batch_size": 16, "log_every": 1, "progress": False,
                              "logger": "tensorboard"})
    events = list((out / "logs" / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == [1, 2]


def test_unknown_logger_is_one_sentence(tiny_ds, tmp_path):
    with pytest.raises(CxrclError, match="logger='wandb'"):
        check_logger("wandb")
    with pytest.raises(CxrclError, match="logger"):
        pretrain("simclr", tiny_ds.root, tmp_path / "r", backbone=TINY_VIT,
                 train_overrides={"steps": 1, "logger": "wandb"})
    assert not (tmp_path / "r").exists()
