"""Real `cxrcl pretrain` processes killed with SIGKILL: during checkpoint saves, and at random
steps three times in one run. Every resume loads a consistent checkpoint and the final weights
equal an uninterrupted run's (CPU, same seed)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cxrcl.training.checkpoint import checkpoint_dirs, latest_checkpoint
from tests.conftest import REPO, TINY_VIT

pytestmark = pytest.mark.slow

STEPS = 12
ARGS = ["--backbone", TINY_VIT, "--steps", str(STEPS), "--batch-size", "16", "--log-every", "1",
        "--checkpoint-every", "3", "--no-progress"]

# A real `cxrcl pretrain` whose checkpoint writer announces each stage of a save and pauses
# there, so the test can kill the process at exactly that moment; and which announces each
# finished step.
STAGED = textwrap.dedent("""
    import os, sys, time
    import cxrcl.training.checkpoint as ckpt
    import cxrcl.methods.base as base

    def staged(name, fn):
        def wrapper(*a, **k):
            print("STAGE", name, flush=True)
            time.sleep(0.3)
            return fn(*a, **k)
        return wrapper

    ckpt.save_model = staged("model", ckpt.save_model)
    ckpt.save_file = staged("state", ckpt.save_file)
    ckpt._fsync = staged("fsync", ckpt._fsync)
    ckpt._link_last = staged("link", ckpt._link_last)
    real_step = base.Method.after_optimizer_step

    def announce(self):
        real_step(self)
        print("STEP", self.step + 1, flush=True)

    base.Method.after_optimizer_step = announce
    from cxrcl.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _cmd(data: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", STAGED, "pretrain", "spcl", "--data", str(data), "--out", str(run),
            *ARGS, *extra]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _run_until(cmd: list[str], stop_line) -> subprocess.Popen:
    """Start ``cmd``, SIGKILL it when a line of its stdout satisfies ``stop_line``; returns the
    finished process (killed, or ended by itself)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.time() + 300
    for line in proc.stdout:
        if stop_line(line.strip()):
            proc.send_signal(signal.SIGKILL)
            break
        if time.time() > deadline:
            proc.kill()
            pytest.fail("the pre-training process did not reach the kill point in 300 s")
    proc.wait(timeout=60)
    return proc


def _finish(data: Path, run: Path, resume: bool) -> None:
    proc = subprocess.run(_cmd(data, run, *(["--resume"] if resume else [])), capture_output=True,
                          text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _final(run: Path) -> dict:
    return load_file(str(latest_checkpoint(run / "checkpoints") / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def reference(tiny_ds, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    _finish(tiny_ds.root, run, resume=False)
    return _final(run)


@pytest.mark.parametrize("stage,nth", [("model", 2), ("state", 2), ("fsync", 4), ("link", 2)])
def test_kill_during_a_checkpoint_save_resumes_from_a_consistent_checkpoint(tiny_ds, tmp_path, reference,
                                                                            stage, nth):
    run = tmp_path / "run"
    seen = {"n": 0}

    def at_stage(line):
        if line == f"STAGE {stage}":
            seen["n"] += 1
        return seen["n"] == nth

    proc = _run_until(_cmd(tiny_ds.root, run), at_stage)
    assert proc.returncode == -signal.SIGKILL
    for d in checkpoint_dirs(run / "checkpoints"):  # every visible checkpoint is complete
        meta = json.loads((d / "state.json").read_text())
        assert int(d.name[5:]) == meta["step"]
        for name, size in meta["sizes"].items():
            assert (d / name).stat().st_size == size
    _finish(tiny_ds.root, run, resume=latest_checkpoint(run / "checkpoints") is not None)
    assert _max_diff(_final(run), reference) <= 1e-6


def test_three_kills_at_random_steps_end_with_the_uninterrupted_weights(tiny_ds, tmp_path, reference):
    run = tmp_path / "run"
    rng = random.Random(1234)
    kills = sorted(rng.sample(range(2, STEPS), 3))
    started = False
    for target in kills:
        cmd = _cmd(tiny_ds.root, run, *(["--resume"] if started else []))
        proc = _run_until(cmd, lambda line, t=target: line == f"STEP {t}")
        assert proc.returncode == -signal.SIGKILL, f"the run ended before step {target}"
        started = latest_checkpoint(run / "checkpoints") is not None
    _finish(tiny_ds.root, run, resume=started)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["complete"] and summary["steps"] == STEPS
    steps = [json.loads(line)["step"] for line in open(run / "metrics.jsonl")]
    assert steps == list(range(1, STEPS + 1))  # no step logged twice after the kills
    assert _max_diff(_final(run), reference) <= 1e-6
    assert torch.isfinite(torch.tensor(summary["final_loss"]))
