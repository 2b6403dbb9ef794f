"""Resumable preparation: an interrupted or killed ``data prepare`` continues where it stopped,
decodes only the missing images and ends byte-identical to an uninterrupted run."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrcl.data import decoding, streaming
from cxrcl.data.sources import prepare
from cxrcl.data.streaming import write_decoded
from cxrcl.data.workers import ordered_map
from cxrcl.data.writer import EXTRAS_FILE, PROGRESS_FILE, PreparedWriter
from cxrcl.errors import CxrclError

REPO = Path(__file__).resolve().parents[2]


def _tree(root: Path, n: int = 40, broken: tuple[int, ...] = (7,)) -> Path:
    """A folder-source tree of ``n`` small, different PNGs in two classes; ``broken`` are truncated."""
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = "pneumonia" if i % 3 == 0 else "normal"
        p = root / cls / f"img{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (30 + i % 5, 40), dtype=np.uint8)).save(p)
        if i in broken:
            data = p.read_bytes()
            p.write_bytes(data[: len(data) // 2])
    return root


class _Counter:
    """Wraps :func:`load_grey`: counts decodes and raises KeyboardInterrupt at decode ``stop_at``."""

    def __init__(self, real, stop_at: int | None = None):
        self.real, self.stop_at, self.calls = real, stop_at, 0

    def __call__(self, path, size):
        self.calls += 1
        if self.stop_at is not None and self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.real(path, size)


def _files(ds_root: Path) -> dict[str, bytes]:
    return {name: (ds_root / name).read_bytes() for name in ("images.npy", "meta.csv", "dataset.json")}


def test_interrupted_folder_prepare_resumes_and_is_byte_identical(tmp_path, monkeypatch, caplog):
    src = _tree(tmp_path / "tree")
    ref = prepare("folder", src, tmp_path / "ref", size=24, progress=False)
    monkeypatch.setattr(streaming, "CHECKPOINT_EVERY", 8)

    # run 1: Ctrl-C at the 21st decode (after 20 images, one of them the broken file)
    counter = _Counter(decoding.load_grey, stop_at=21)
    monkeypatch.setattr(decoding, "load_grey", counter)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prepare("folder", src, out, size=24, progress=False)
    partial = tmp_path / ".out.partial"
    assert not out.exists() and (partial / PROGRESS_FILE).exists()
    state = json.loads((partial / PROGRESS_FILE).read_text())
    assert state["n_done"] == 20 and state["done"] == [[0, 20]]
    assert len(state["failed"]) == 1  # the broken file is remembered, not retried

    # run 2: the same command decodes only the 20 missing images
    counter = _Counter(counter.real)
    monkeypatch.setattr(decoding, "load_grey", counter)
    with caplog.at_level(logging.WARNING, logger="cxrcl.data"):
        ds = prepare("folder", src, out, size=24, progress=False)
    assert counter.calls == 20
    assert any("resuming" in r.getMessage() and "20 of 40" in r.getMessage() for r in caplog.records)
    assert not partial.exists() and not (out / PROGRESS_FILE).exists()
    assert len(ds) == 39 and ds.info["n_skipped"] == 1
    assert _files(out) == _files(ref.root)


def test_killed_prepare_resumes_with_workers(tmp_path):
    """SIGKILL (no chance to save anything) in a subprocess with 2 workers, then rerun."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from pathlib import Path
        import numpy as np
        from cxrcl.data.decoding import pad_resize
        from cxrcl.data.streaming import write_decoded

        def synth(path, size):
            i = int(path.rsplit("/", 1)[1])
            time.sleep(float(sys.argv[2]))
            if i % 50 == 13:
                raise ValueError("synthetic unreadable image")
            return pad_resize(np.random.default_rng(i).integers(0, 256, (48, 40), dtype=np.uint8), size)

        if __name__ == "__main__":
            calls = []
            writer, kept, skipped = write_decoded(
                Path(sys.argv[1]), [f"synthetic/{i}" for i in range(200)], 32, 2, False,
                decode=synth, checkpoint_every=10, on_image=lambda d, n: calls.append(d))
            writer.images.flush()
            print(len(calls), len(kept), len(skipped), flush=True)
            np.save(Path(sys.argv[1]).with_suffix(".kept.npy"), np.asarray(kept))
            import shutil
            shutil.copy(writer.tmp / "images.npy", Path(sys.argv[1]).with_suffix(".images.npy"))
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(out: Path, delay: float) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), str(out), str(delay)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    ref = run(tmp_path / "ref", 0.0)
    assert ref.wait(timeout=120) == 0, ref.stderr.read()
    assert ref.stdout.read().split() == ["200", "196", "4"]

    job = run(tmp_path / "out", 0.01)
    progress = tmp_path / ".out.partial" / PROGRESS_FILE
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and job.poll() is None:
        if progress.exists():
            try:
                done = json.loads(progress.read_text())["n_done"]
            except (OSError, ValueError):
                done = 0
            if done >= 50:
                break
        time.sleep(0.01)
    assert job.poll() is None, "the job finished before it could be killed"
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=30)
    done = json.loads(progress.read_text())["n_done"]
    assert 50 <= done < 200

    again = run(tmp_path / "out", 0.0)
    assert again.wait(timeout=120) == 0, again.stderr.read()
    calls, kept, skipped = map(int, again.stdout.read().split())
    assert calls == 200 - done and (kept, skipped) == (196, 4)
    assert "resuming" in again.stderr.read()
    assert (tmp_path / "out.images.npy").read_bytes() == (tmp_path / "ref.images.npy").read_bytes()
    assert np.array_equal(np.load(tmp_path / "out.kept.npy"), np.load(tmp_path / "ref.kept.npy"))


def test_a_different_job_starts_over_with_a_message(tmp_path, monkeypatch, caplog):
    src = _tree(tmp_path / "tree", n=12, broken=())
    monkeypatch.setattr(streaming, "CHECKPOINT_EVERY", 4)
    monkeypatch.setattr(decoding, "load_grey", _Counter(decoding.load_grey, stop_at=7))
    with pytest.raises(KeyboardInterrupt):
        prepare("folder", src, tmp_path / "out", size=24, progress=False)
    counter = _Counter(decoding.load_grey.real)
    monkeypatch.setattr(decoding, "load_grey", counter)
    with caplog.at_level(logging.WARNING, logger="cxrcl.data"):
        ds = prepare("folder", src, tmp_path / "out", size=16, progress=False)
    assert counter.calls == 12 and ds.size == 16
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "different job" in msg and "size" in msg and "starting the preparation over" in msg


def test_partial_without_progress_record_starts_over(tmp_path, caplog):
    partial = tmp_path / ".out.partial"
    partial.mkdir()
    (partial / "images.npy").write_bytes(b"junk from an old version")
    paths = [str(p) for p in sorted(_tree(tmp_path / "t", n=4, broken=()).rglob("*.png"))]
    with caplog.at_level(logging.WARNING, logger="cxrcl.data"):
        writer, kept, skipped = write_decoded(tmp_path / "out", paths, 16, 1, False)
    assert kept == [0, 1, 2, 3] and not skipped and writer.n_done == 4
    assert any("without a progress record" in r.getMessage() for r in caplog.records)
    writer.abort()


def test_resume_false_and_errors_leave_no_partial(tmp_path, monkeypatch):
    src = _tree(tmp_path / "tree", n=6, broken=())
    paths = [str(p) for p in sorted(src.rglob("*.png"))]
    monkeypatch.setattr(decoding, "load_grey", _Counter(decoding.load_grey, stop_at=3))
    with pytest.raises(KeyboardInterrupt):
        write_decoded(tmp_path / "out", paths, 16, 1, False, resume=False)
    assert not (tmp_path / ".out.partial").exists()
    with pytest.raises(CxrclError, match="none of the 2 image files"):
        write_decoded(tmp_path / "out", [str(tmp_path / "a.png"), str(tmp_path / "b.png")], 16, 1, False)
    assert not (tmp_path / ".out.partial").exists()


# ----------------------------------------------------------------------------- the writer API
def _img(i: int, size: int = 8) -> np.ndarray:
    return np.full((size, size), i, dtype=np.uint8)


def _meta(n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"i{k}" for k in range(n)], "patient_id": [f"p{k}" for k in range(n)],
                         "split": ["train"] * n})


def test_writer_done_mask_compaction_and_resume_after_compaction(tmp_path):
    fp = {"job": "unit"}
    w = PreparedWriter(tmp_path / "out", n=6, size=8, with_masks=True, resume=True, fingerprint=fp,
                       checkpoint_every=2)
    assert not w.resumed and list(w.pending()) == list(range(6))
    for i in (0, 1, 3, 5):
        w.put(i, _img(i), mask=_img(1))
    w.skip(2, "broken")
    w.skip(4, "missing")
    assert w.n_done == 6 and not len(w.pending()) and w.failed == {2: "broken", 4: "missing"}
    w.compact([0, 1, 3, 5])
    assert w.n == 4 and w.images.shape == (4, 8, 8)
    del w  # "killed" after compaction, before finish

    w = PreparedWriter(tmp_path / "out", n=6, size=8, with_masks=True, resume=True, fingerprint=fp)
    assert w.resumed and w.compacted and w.n == 4 and w.failed == {2: "broken", 4: "missing"}
    ds = w.finish(_meta(4), source="test")
    assert [int(ds.images[k, 0, 0]) for k in range(4)] == [0, 1, 3, 5]
    assert ds.masks is not None and int(ds.masks.sum()) == 4 * 64
    assert not (tmp_path / ".out.partial").exists() and not (ds.root / PROGRESS_FILE).exists()


def test_writer_extras_survive_a_kill_and_a_torn_line(tmp_path):
    fp = {"job": "extras"}
    w = PreparedWriter(tmp_path / "out", n=5, size=8, resume=True, fingerprint=fp, checkpoint_every=2)
    w.put(0, _img(0), extra={"view": "PA", "age": 45.5})
    w.skip(1, "broken", extra={"view": "AP", "age": None})
    w.put(2, _img(2))  # no extra
    w.put(3, _img(3), extra={"view": "LL", "age": np.int64(7)})  # numpy scalars are stored too
    w.checkpoint()
    w._unsaved_extras = {4: {"view": "XX"}}  # row 4 never reached a progress record ...
    w._save_extras()
    with open(w.tmp / EXTRAS_FILE, "a") as f:
        f.write('[4, {"vi')  # ... and a kill tore the next line
    del w

    w = PreparedWriter(tmp_path / "out", n=5, size=8, resume=True, fingerprint=fp)
    assert w.resumed and list(w.pending()) == [4]
    assert w.extras == {0: {"view": "PA", "age": 45.5}, 1: {"view": "AP", "age": None}, 3: {"view": "LL", "age": 7}}
    w.put(4, _img(4), extra={"view": "PA"})
    w.compact([0, 2, 3, 4])
    assert w.extras[4] == {"view": "PA"} and w.extras[1]["view"] == "AP"  # input rows, kept after compaction
    ds = w.finish(_meta(4), source="test")
    assert not (ds.root / EXTRAS_FILE).exists() and [int(ds.images[k, 0, 0]) for k in range(4)] == [0, 2, 3, 4]


def test_writer_interrupted_rename_after_compaction_is_completed(tmp_path):
    fp = {"job": "unit"}
    w = PreparedWriter(tmp_path / "out", n=4, size=8, resume=True, fingerprint=fp)
    for i in range(4):
        w.put(i, _img(i))
    w.checkpoint()
    # simulate a kill between "progress says compacted" and the rename of the compacted file
    from cxrcl.data.writer import copy_rows
    copy_rows(w.tmp / "images.npy", w.tmp / "images.compact.npy", np.array([1, 3]))
    w.compacted, w.n = True, 2
    w._write_progress()
    del w
    w = PreparedWriter(tmp_path / "out", n=4, size=8, resume=True, fingerprint=fp)
    assert w.compacted and w.images.shape == (2, 8, 8)
    assert [int(w.images[k, 0, 0]) for k in range(2)] == [1, 3]


def test_writer_finish_refuses_missing_rows_when_tracking(tmp_path):
    w = PreparedWriter(tmp_path / "out", n=3, size=8, resume=True, fingerprint={"x": 1})
    w.put(0, _img(0))
    with pytest.raises(CxrclError, match="only 1 of 3 images"):
        w.finish(_meta(3), source="test")
    w.abort()


def test_writer_without_fingerprint_behaves_as_before(tmp_path):
    w = PreparedWriter(tmp_path / "out", n=3, size=8, checkpoint_every=1)
    w.put_many(0, np.stack([_img(k) for k in range(3)]))
    assert not (w.tmp / PROGRESS_FILE).exists()
    ds = w.finish(_meta(3), source="test")
    assert [int(ds.images[k, 0, 0]) for k in range(3)] == [0, 1, 2]


def _square(x: int) -> int:
    return x * x


def test_ordered_map_keeps_order_with_a_pool():
    assert list(ordered_map(_square, range(50), workers=2, max_pending=3)) == [x * x for x in range(50)]
    assert list(ordered_map(_square, iter([]), workers=2)) == []
