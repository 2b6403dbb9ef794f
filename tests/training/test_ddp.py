"""The multi-GPU/multi-node code path (torchrun + Fabric DDP) on 2 CPU processes over gloo:
one step equals one process on the concatenated batch, and a killed worker stops the job within
a bounded time, after which the run resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import load_file

from cxrcl.data.normalize import to_model_input
from cxrcl.data.prepared import PreparedDataset
from cxrcl.losses.info_nce import info_nce
from cxrcl.methods.registry import build_method
from cxrcl.training.batches import BatchStream, step_generator
from cxrcl.training.checkpoint import latest_checkpoint
from cxrcl.training.optim import param_groups, warmup_cosine
from cxrcl.training.run_config import TrainConfig
from tests.conftest import REPO, TINY_VIT

pytestmark = pytest.mark.slow


def _torchrun(script_or_module: list[str], *args: str) -> list[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
            str(port), *script_or_module, *args]


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _reference_step(ds: PreparedDataset, seed: int = 0, batch: int = 8) -> tuple[float, dict]:
    """One S-PCL step as one process on the 2 ranks' concatenated batch (same draws)."""
    from lightning.fabric.utilities.seed import seed_everything

    seed_everything(seed, verbose=False)
    m = build_method("spcl", TINY_VIT, ds.size)
    t = TrainConfig()
    opt = torch.optim.AdamW(param_groups(m, t.weight_decay), lr=t.lr, betas=t.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(1, t.warmup_fraction, t.min_lr_fraction))
    captured = []
    m.criterion.forward = lambda z1, z2, **k: captured.append((z1, z2)) or z1.sum() * 0
    m.set_progress(0, 1)
    for rank in (0, 1):
        stream = BatchStream(ds.images, ds.indices(["train"]), batch, seed, rank, 2)
        m.training_step(to_model_input(stream.batch(0), ds.size), step_generator(seed, 0, rank, "cpu"))
    z1 = torch.cat([c[0] for c in captured])
    z2 = torch.cat([c[1] for c in captured])
    loss = info_nce(z1, z2, 0.1, gather=False)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), t.grad_clip)
    opt.step()
    sched.step()
    return loss.item(), {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_torchrun_two_processes_equal_one_process_on_the_concatenated_batch(tiny_ds, tmp_path):
    run = tmp_path / "ddp"
    cmd = _torchrun(["-m", "cxrcl"], "pretrain", "spcl", "--data", str(tiny_ds.root), "--out", str(run),
                    "--backbone", TINY_VIT, "--steps", "1", "--batch-size", "8", "--log-every", "1",
                    "--no-progress")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 1
    assert proc.stdout.count("final loss") == 1  # only rank 0 reports
    logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    ref_loss, ref_weights = _reference_step(tiny_ds)
    assert logged == pytest.approx(ref_loss, abs=1e-5)
    got = load_file(str(latest_checkpoint(run / "checkpoints") / "model.safetensors"))
    # Adam's first step moves each weight by about lr (5e-4) times g / |g|, which magnifies the
    # float rounding of the gathered sums for near-zero gradients: allow a tenth of one step
    diffs = torch.cat([(v - ref_weights[k]).abs().flatten() for k, v in got.items()])
    assert float(diffs.max()) < 5e-5 and float(diffs.mean()) < 1e-7


WORKER = textwrap.dedent("""
    import os, sys, time
    import cxrcl.methods.base as base
    real = base.Method.after_optimizer_step

    def announce(self):
        real(self)
        # one write per line: both ranks share the pipe, and print() may split a line in two
        os.write(1, f"RANK {os.environ.get('RANK')} PID {os.getpid()} STEP {self.step + 1}\\n".encode())
        if os.environ.get("HOLD_RANK1_AT_STEP3") and os.environ.get("RANK") == "1" and self.step + 1 == 3:
            time.sleep(300)  # hold rank 1 here until the test kills it, so the kill lands mid-run

    base.Method.after_optimizer_step = announce
    from cxrcl.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_killed_worker_stops_the_job_and_the_run_resumes(tiny_ds, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    run = tmp_path / "ddp"
    args = ["pretrain", "spcl", "--data", str(tiny_ds.root), "--out", str(run), "--backbone", TINY_VIT,
            "--steps", "8", "--batch-size", "8", "--log-every", "1", "--checkpoint-every", "2",
            "--no-progress"]
    proc = subprocess.Popen(_torchrun([str(script)], *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**_env(), "HOLD_RANK1_AT_STEP3": "1"})
    for line in proc.stdout:
        parts = line.split()
        if parts[:1] == ["RANK"] and parts[1] == "1" and parts[5] == "3":
            os.kill(int(parts[3]), signal.SIGKILL)
            killed = time.time()
            break
    else:
        proc.wait(timeout=60)
        pytest.fail("rank 1 never reached step 3: " + proc.stderr.read()[-3000:])
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the job hung after a worker was killed")
    assert proc.returncode != 0
    assert time.time() - killed < 120
    assert latest_checkpoint(run / "checkpoints").name == "step-00000002"
    resumed = subprocess.run(_torchrun([str(script)], *args, "--resume"), capture_output=True, text=True,
                             timeout=600, env=_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["steps"] == 8
