"""SIGKILL a real `cxrcl pretrain` many times and check what every resume finds.

Two experiments on the test suite's tiny data set (160 noise images with a learnable bright
square, 32 px, ViT with 8 px patches and 2 blocks,
S-PCL, 12 steps of 16, a checkpoint every 3 steps, one CPU thread):

- ``save_stages``: the process is killed while a checkpoint is being written, at each stage of
  the save (weights file, state file, fsync, the ``last`` link), and resumed;
- ``random_kills``: TRIALS runs, each killed three times at random steps (a seeded draw per
  trial) and resumed after each kill.

For every kill it records whether every visible ``step-N`` directory was complete (sizes in
``state.json`` match the files, step matches the name), the step the resume started from, and
at the end the largest absolute difference between the final weights and an uninterrupted run
of the same seed. The driver (a pretrain whose saver pauses and announces each stage) is the
one the slow tests use: tests/training/test_kill_resume.py.

    .venv/bin/python benchmarks/kill_resume.py [--trials 5] [--out benchmarks/results/kill_resume.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxrcl.io import atomic_write_json  # noqa: E402
from cxrcl.training.checkpoint import checkpoint_dirs, latest_checkpoint  # noqa: E402
from tests.conftest import make_tiny  # noqa: E402
from tests.training import test_kill_resume as driver  # noqa: E402


def _consistent(run: Path) -> bool:
    for d in checkpoint_dirs(run / "checkpoints"):
        meta = json.loads((d / "state.json").read_text())
        if int(d.name[5:]) != meta["step"]:
            return False
        if any((d / name).stat().st_size != size for name, size in meta["sizes"].items()):
            return False
    return True


def _resume_step(run: Path) -> int:
    last = latest_checkpoint(run / "checkpoints")
    return 0 if last is None else int(last.name[5:])


def _kill_at(data: Path, run: Path, stop_line) -> dict:
    resume = latest_checkpoint(run / "checkpoints") is not None
    proc = driver._run_until(driver._cmd(data, run, *(["--resume"] if resume else [])), stop_line)
    return {"killed": proc.returncode == -signal.SIGKILL, "checkpoints_consistent": _consistent(run),
            "resumes_from_step": _resume_step(run)}


def save_stages(data: Path, work: Path, reference: dict) -> list[dict]:
    rows = []
    for stage, nth in [("model", 2), ("state", 2), ("fsync", 4), ("link", 2)]:
        run = work / f"stage-{stage}"
        seen = {"n": 0}

        def at_stage(line, stage=stage, nth=nth, seen=seen):
            seen["n"] += line == f"STAGE {stage}"
            return seen["n"] == nth

        row = {"stage": stage, "nth_save_call": nth, **_kill_at(data, run, at_stage)}
        driver._finish(data, run, resume=row["resumes_from_step"] > 0)
        row["max_abs_diff_vs_uninterrupted"] = driver._max_diff(driver._final(run), reference)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def random_kills(data: Path, work: Path, reference: dict, trials: int) -> list[dict]:
    rows = []
    for trial in range(trials):
        run = work / f"random-{trial}"
        steps = sorted(random.Random(1000 + trial).sample(range(2, driver.STEPS), 3))
        kills = [_kill_at(data, run, lambda line, t=t: line == f"STEP {t}") | {"at_step": t} for t in steps]
        driver._finish(data, run, resume=_resume_step(run) > 0)
        logged = [json.loads(line)["step"] for line in open(run / "metrics.jsonl")]
        row = {"trial": trial, "kills": kills,
               "metrics_steps_logged_once": logged == list(range(1, driver.STEPS + 1)),
               "max_abs_diff_vs_uninterrupted": driver._max_diff(driver._final(run), reference)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/kill_resume.json"))
    args = ap.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_tiny(work / "data").root
        driver._finish(data, work / "reference", resume=False)
        reference = driver._final(work / "reference")
        stages = save_stages(data, work, reference)
        kills = random_kills(data, work, reference, args.trials)
    every = [r["max_abs_diff_vs_uninterrupted"] for r in stages + kills]
    result = {
        "command": "python benchmarks/kill_resume.py " + " ".join(sys.argv[1:]),
        "setup": {"data": "tests.conftest.make_tiny", "images": 160, "image_size": 32, "backbone": driver.TINY_VIT, "method": "spcl",
                  "steps": driver.STEPS, "args": driver.ARGS},
        "save_stages": stages, "random_kills": kills,
        "totals": {"kills": len(stages) + 3 * len(kills),
                   "all_checkpoints_consistent": all(r["checkpoints_consistent"] for r in stages)
                   and all(k["checkpoints_consistent"] for r in kills for k in r["kills"]),
                   "max_abs_diff_vs_uninterrupted": max(every)},
        "wall_s": round(time.time() - started, 1),
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
    }
    atomic_write_json(Path(args.out), result)
    print(json.dumps(result["totals"]))


if __name__ == "__main__":
    main()
