"""Atomic outputs (issue 6, guarantee 2): a ``cxrcl data ...`` process killed with SIGKILL at any
moment never leaves a directory that a later command reads as a valid data set.

Every writer path (prepare, phantom, merge, relabel) fills ``.OUT.partial`` and renames it to
``OUT`` only when complete; replacing an existing set (``--overwrite``) renames the old one aside
first. So after any kill, ``OUT`` is absent, the old set or the complete new one, never a mix.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrcl.data.prepared import PreparedDataset, content_hash
from cxrcl.errors import CxrclError

REPO = Path(__file__).resolve().parents[2]
CLI = "import sys; from cxrcl.cli import main; sys.exit(main())"


def _cli(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CLI, *argv], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _state(out: Path) -> str | None:
    """None when OUT is absent, else its content hash -- after checking that it is whole."""
    if not out.exists():
        return None
    try:
        ds = PreparedDataset.open(out)
    except CxrclError as e:  # e.g. a folder without dataset.json: must never happen
        raise AssertionError(f"{out} exists but is not a valid prepared data set: {e}") from None
    assert ds.info["complete"] and len(ds.meta) == len(ds.images)
    assert content_hash(out) == ds.info["content_hash"], "files of two different sets mixed"
    return ds.info["content_hash"]


def _tree(root: Path, n: int) -> Path:
    rng = np.random.default_rng(1)
    for i in range(n):
        d = root / ("a" if i % 3 else "b")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (96, 96), dtype=np.uint8)).save(d / f"{i:04d}.png")
    return root


@pytest.mark.slow
def test_sigkill_at_any_moment_never_leaves_a_half_data_set(tmp_path):
    src = _tree(tmp_path / "in", 400)
    ref, out = tmp_path / "ref", tmp_path / "out"
    t0 = time.perf_counter()
    assert _cli("data", "prepare", "folder", str(src), str(ref), "--size", "32").wait() == 0
    full = time.perf_counter() - t0
    old = _state(ref)
    new_size = ["--size", "48"]
    # the old set sits at OUT; each run replaces it (--overwrite) and is killed at a new moment
    assert _cli("data", "prepare", "folder", str(src), str(out), "--size", "32").wait() == 0
    assert _state(out) == old
    seen = set()
    for frac in (0.15, 0.35, 0.55, 0.75, 0.9, 1.0, 1.1):
        p = _cli("data", "prepare", "folder", str(src), str(out), *new_size, "--overwrite")
        time.sleep(full * frac)
        p.send_signal(signal.SIGKILL)
        p.wait()
        seen.add(_state(out))
        # a later command reads OUT only when whole; the same command resumes and finishes
    assert _cli("data", "prepare", "folder", str(src), str(out), *new_size, "--overwrite").wait() == 0
    final = _state(out)
    assert final is not None and final != old and seen <= {None, old, final}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "ref"]  # nothing left aside


@pytest.mark.slow
def test_sigkill_of_phantom_merge_relabel(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        assert _cli("data", "phantom", str(d), "--n", "2000", "--size", "48").wait() == 0
    for argv, out in ((["data", "phantom", str(tmp_path / "ph"), "--n", "3000", "--size", "64"], "ph"),
                      (["data", "merge", str(a), str(b), str(tmp_path / "m"), "--size", "64"], "m"),
                      (["data", "relabel", str(a), str(tmp_path / "r"), "--drop", "nodule"], "r")):
        for delay in (0.3, 1.0, 2.0, 4.0):
            p = _cli(*argv, "--overwrite")
            time.sleep(delay)
            p.send_signal(signal.SIGKILL)
            p.wait()
            _state(tmp_path / out)
        assert _cli(*argv, "--overwrite").wait() == 0 and _state(tmp_path / out) is not None
