"""A full disk during preparation is one sentence, never a ``Bus error`` (issue 6, item 6).

The memory-mapped arrays are checked against the free space before any work
(``shutil.disk_usage``) and their blocks are reserved with ``posix_fallocate``, so that a disk that
fills up fails with ``ENOSPC`` instead of a SIGBUS when a page is written. Any ``ENOSPC`` of the
writer becomes "no space left on DEVICE ...: free space and run the same command to resume", and
the partial directory is kept so that the same command does resume.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections import namedtuple

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrcl.cli import main
from cxrcl.data import decoding, writer
from cxrcl.data.prepared import PreparedDataset

Usage = namedtuple("Usage", "total used free")
SENTENCE = "free space and run the same command to resume"


def _tree(root, n=40):
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / ("a" if i % 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(d / f"{i:03d}.png")
    return root


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_preflight_refuses_when_the_arrays_do_not_fit(tmp_path, monkeypatch, capsys):
    src = _tree(tmp_path / "in")
    monkeypatch.setattr(writer.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    for argv, need in ((["data", "prepare", "folder", str(src), str(tmp_path / "out"), "--size", "32"],
                        "40.0 KiB"),  # 40 images of 32 x 32 bytes
                       (["data", "phantom", str(tmp_path / "ph"), "--n", "64", "--size", "32"],
                        "128.0 KiB")):  # 64 images + 64 masks
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("cxrcl: error: no space left on /") and err[-1].endswith(SENTENCE)
        assert f"(the data set needs {need}, 1000 bytes are free)" in err[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing half-made


def test_reservation_failure_is_the_sentence(tmp_path, monkeypatch, capsys):
    if not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate here")
    monkeypatch.setattr(writer.os, "posix_fallocate", _enospc)
    assert main(["data", "phantom", str(tmp_path / "ph"), "--n", "64", "--size", "16"]) == 2
    assert capsys.readouterr().err.strip().endswith(SENTENCE)
    assert list(tmp_path.iterdir()) == []  # the reserved-then-failed arrays are removed


def test_disk_full_while_finishing_keeps_the_work_and_resumes(tmp_path, monkeypatch, capsys):
    src, out = _tree(tmp_path / "in"), tmp_path / "out"
    argv = ["data", "prepare", "folder", str(src), str(out), "--size", "16"]
    with monkeypatch.context() as m:
        m.setattr(pd.DataFrame, "to_csv", _enospc)  # meta.csv cannot be written: the disk is full
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().endswith(SENTENCE)
    assert not out.exists() and (tmp_path / ".out.partial" / "progress.json").exists()

    calls = []
    real = decoding.load_grey
    monkeypatch.setattr(decoding, "load_grey", lambda p, s: calls.append(p) or real(p, s))
    assert main(argv) == 0  # the same command, once space is free: nothing is decoded again
    assert calls == [] and len(PreparedDataset.open(out)) == 40


def test_disk_full_during_a_checkpoint(tmp_path, monkeypatch, capsys):
    src, out = _tree(tmp_path / "in", n=600), tmp_path / "out"
    argv = ["data", "prepare", "folder", str(src), str(out), "--size", "16"]
    real = writer.PreparedWriter._write_progress
    seen = []

    def full_after_first(self):
        seen.append(1)
        if len(seen) > 2:  # the job record and one checkpoint are on disk, then the disk fills
            _enospc()
        real(self)

    with monkeypatch.context() as m:
        m.setattr(writer.PreparedWriter, "_write_progress", full_after_first)
        assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(SENTENCE)
    assert main(argv) == 0 and len(PreparedDataset.open(out)) == 600


def test_no_space_names_the_mount_point(tmp_path):
    e = writer.no_space(tmp_path / "does" / "not" / "exist")
    mount = str(e).split(" ")[4].rstrip(":")
    assert os.path.ismount(mount) and str(tmp_path).startswith(mount)
    assert shutil.disk_usage(mount).total > 0


def test_disk_full_during_merge_keeps_the_partial(tmp_path, monkeypatch, capsys):
    for name in ("a", "b"):
        assert main(["data", "phantom", str(tmp_path / name), "--n", "32", "--size", "16"]) == 0
    argv = ["data", "merge", str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "m")]
    real = writer.PreparedWriter._write_progress
    calls = []

    def full_after_the_job_record(self):
        calls.append(1)
        if len(calls) > 1:
            _enospc()
        real(self)

    with monkeypatch.context() as m:
        m.setattr(writer.PreparedWriter, "_write_progress", full_after_the_job_record)
        assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(SENTENCE)
    assert (tmp_path / ".m.partial" / "progress.json").exists()
    assert main(argv) == 0 and len(PreparedDataset.open(tmp_path / "m")) == 64
