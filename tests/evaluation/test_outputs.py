"""Output files of eval, bench, report and embed: a wrong --out is refused in one sentence
before any work, files are replaced atomically, and a file cxrcl did not write is left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cxrcl.evaluation.efficiency as efficiency
import cxrcl.evaluation.protocol as protocol
import cxrcl.evaluation.report as report
from cxrcl.cli import main
from cxrcl.errors import CxrclError
from cxrcl.evaluation.outputs import check_output, write_npz
from cxrcl.evaluation.results import save_json

REPO = Path(__file__).resolve().parents[2]


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.startswith("cxrcl: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture
def no_work(monkeypatch):
    """Every expensive entry point fails the test if it is reached."""
    def forbidden(*a, **k):
        raise AssertionError("expensive work started before --out was checked")
    monkeypatch.setattr(protocol, "extractor_for", forbidden)
    monkeypatch.setattr(protocol.PreparedDataset, "open", forbidden)
    monkeypatch.setattr(efficiency, "benchmark", forbidden)
    monkeypatch.setattr(report, "collect_inputs", forbidden)


def _commands(tiny_ds, out):
    return {
        "eval": ["eval", "linear", "--run", "pixels", "--data", tiny_ds.root, "--label", "all", "--out", out],
        "bench": ["bench", "--methods", "spcl", "--data", tiny_ds.root, "--out", out],
        "report": ["report", tiny_ds.root, "--out", out],
        "embed": ["embed", "--run", "pixels", "--data", tiny_ds.root, "--out", out],
    }


@pytest.mark.parametrize("command", ["eval", "bench", "report", "embed"])
def test_out_is_a_directory(command, capsys, tmp_path, tiny_ds, no_work):
    code, _, err = run_cli(capsys, *_commands(tiny_ds, tmp_path)[command])
    assert_one_line_error(code, err, str(tmp_path), "is a directory")


@pytest.mark.parametrize("command", ["eval", "bench", "report", "embed"])
def test_out_below_a_file(command, capsys, tmp_path, tiny_ds, no_work):
    (tmp_path / "plain").write_text("x")
    code, _, err = run_cli(capsys, *_commands(tiny_ds, tmp_path / "plain" / "sub" / "o.json")[command])
    assert_one_line_error(code, err, "plain", "not a folder")
    assert (tmp_path / "plain").read_text() == "x"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs POSIX permissions that apply (root bypasses them)")
@pytest.mark.parametrize("command", ["eval", "bench", "report", "embed"])
def test_unwritable_folder(command, capsys, tmp_path, tiny_ds, no_work):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run_cli(capsys, *_commands(tiny_ds, locked / "o.json")[command])
    finally:
        locked.chmod(0o700)
    assert_one_line_error(code, err, "locked", "not writable")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")
@pytest.mark.parametrize("command", ["eval", "bench", "report", "embed"])
def test_folder_where_no_file_can_be_made(command, capsys, tiny_ds, no_work):
    # /proc/self is a folder in which nobody, root included, can create a file
    code, _, err = run_cli(capsys, *_commands(tiny_ds, "/proc/self/o.json")[command])
    assert_one_line_error(code, err, "/proc/self", "not writable")


@pytest.mark.parametrize("command", ["eval", "bench", "report", "embed"])
def test_a_users_file_is_never_overwritten(command, capsys, tmp_path, tiny_ds, no_work):
    theirs = tmp_path / "notes.json"
    theirs.write_text("my own notes")
    code, _, err = run_cli(capsys, *_commands(tiny_ds, theirs)[command])
    assert_one_line_error(code, err, str(theirs), "not written by cxrcl")
    assert theirs.read_text() == "my own notes"


def test_own_outputs_may_be_replaced(tmp_path):
    js = save_json({"task": "linear", "results": []}, tmp_path / "e.json")
    assert check_output(js, "json") == js
    npz = write_npz(tmp_path / "f.npz", features=np.zeros((2, 3), np.float32), id=np.array(["a", "b"]),
                    split=np.array(["train", "test"]))
    assert check_output(npz, "npz") == npz
    md = tmp_path / "r.md"
    md.write_text("# cxrcl report\n\nReproduce: `cxrcl report e.json --out r.md`\n")
    assert check_output(md, "report") == md
    with pytest.raises(CxrclError, match="not written by cxrcl"):
        check_output(md, "json")


def test_embed_writes_exactly_the_named_file(capsys, tmp_path, tiny_ds):
    code, _, err = run_cli(capsys, "embed", "--run", "pixels", "--data", tiny_ds.root, "--out", tmp_path / "feats")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats"]
    with np.load(tmp_path / "feats") as z:
        assert z["features"].shape[0] == len(tiny_ds)


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = write_npz(tmp_path / "f.npz", features=np.zeros((2, 2), np.float32),
                       id=np.array(["a", "b"]), split=np.array(["train", "test"]))
    before = target.read_bytes()

    def half_then_fail(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", half_then_fail)
    with pytest.raises(CxrclError, match="No space left"):
        write_npz(target, features=np.ones((3, 2), np.float32), id=np.array(["a", "b", "c"]),
                  split=np.array(["train"] * 3))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["f.npz"]  # no temporary left behind


KILL_CHILD = r"""
import sys, time
from pathlib import Path
import numpy as np
from cxrcl.evaluation.outputs import write_npz
target, ready = Path(sys.argv[1]), Path(sys.argv[2])

def half_then_hang(f, **arrays):
    f.write(b"PK\x03\x04 half a zip")
    f.flush()
    ready.write_text("writing")
    time.sleep(60)

np.savez_compressed = half_then_hang
write_npz(target, features=np.ones((3, 2), np.float32), id=np.array(["a", "b", "c"]),
          split=np.array(["train"] * 3))
"""


def test_sigkill_during_a_write_leaves_the_previous_file(tmp_path):
    target = tmp_path / "f.npz"
    write_npz(target, features=np.zeros((2, 2), np.float32), id=np.array(["a", "b"]),
              split=np.array(["train", "test"]))
    before = target.read_bytes()
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(target), str(ready)], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the writer never started"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert target.read_bytes() == before
    with np.load(target) as z:
        assert z["features"].shape == (2, 2)
    # the only other file is the killed writer's hidden temporary, never under the real name
    assert {p.name for p in tmp_path.iterdir()} - {"f.npz", "ready"} <= {
        p.name for p in tmp_path.glob(".f.npz.*")}


def test_report_failure_keeps_the_previous_report(tmp_path, monkeypatch):
    ev = save_json({"task": "linear", "run": "pixels", "labels": ["x"], "results": [
        {"fraction": f, "seed": 0, "n_train": int(100 * f), "auroc": 0.7 + 0.1 * f, "auroc_per_label": {"x": 0.7 + 0.1 * f}}
        for f in (0.1, 1.0)]}, tmp_path / "e.json")  # two fractions: the report draws its AUROC plot
    out = report.write_report([ev], tmp_path / "r.md")
    assert any(p.suffix == ".png" for p in tmp_path.iterdir())
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def half_then_fail(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half an image")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("matplotlib.figure.Figure.savefig", half_then_fail)
    with pytest.raises(CxrclError, match="No space left"):
        report.write_report([ev], out)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
