"""Ctrl-C (SIGINT) and SIGTERM stop a real `cxrcl pretrain` at the next step boundary with a
checkpoint, even before the first scheduled one, so "resumes with --resume" is true."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from cxrcl.training.checkpoint import latest_checkpoint
from tests.training.test_kill_resume import STEPS, _cmd, _env, _final, _max_diff, reference  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_and_the_run_resumes_exactly(tiny_ds, tmp_path, reference, signum):  # noqa: F811
    run = tmp_path / "run"
    # no scheduled checkpoint before the end: only the signal can save one
    proc = subprocess.Popen(_cmd(tiny_ds.root, run, "--checkpoint-every", "1000"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    for line in proc.stdout:
        if line.strip() == "STEP 2":
            proc.send_signal(signum)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    saved = latest_checkpoint(run / "checkpoints")
    assert saved is not None and 2 <= int(saved.name[5:]) < STEPS
    summary = run / "summary.json"
    assert not summary.exists() or not json.loads(summary.read_text()).get("complete")

    resumed = subprocess.run(_cmd(tiny_ds.root, run, "--checkpoint-every", "1000", "--resume"),
                             capture_output=True, text=True, env=_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _max_diff(_final(run), reference) <= 1e-6  # checkpoint timing does not change training
