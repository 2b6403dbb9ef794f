"""Load: does pre-training on a 100,000-image prepared set keep memory and open files flat?

    python benchmarks/bench_load.py make      # the prepared phantom set (100,000 x 64 px)
    python benchmarks/bench_load.py epoch     # one epoch over its train split, in one process
    python benchmarks/bench_load.py passes    # 3 epochs over its val split, in one process

Each phase is one invocation and adds its section to ``--json`` (default
benchmarks/results/bench_load.json). To fit 10-minute turns of a shared machine, a phase can be
split in two processes: ``epoch --stop-after N`` (section ``epoch_first_part``) then ``epoch
--resume`` (section ``epoch_resumed``), which continues the same run from its checkpoint.

``make``: ``cxrcl.data.phantom.make_phantom(--data, n=--n, size=--size)`` (default a folder in
the temp dir: the set is 400 MB and is not part of the repository); its wall time is recorded.

``epoch`` and ``passes`` run the real command, ``cxrcl pretrain spcl --backbone
vit_tiny_patch16_224 --image-size 64`` (ViT-Tiny, 16 px patches: 4 x 4 tokens), as a child
process, and this script samples the child every ``--interval`` seconds from /proc/PID/status
(VmRSS, RssAnon = heap and other private memory, RssFile = pages of mapped files such as the
memory-mapped images, which the kernel can drop at any time, VmHWM = peak RSS) and counts
/proc/PID/fd, and tags each sample with the last step logged in metrics.jsonl. ``epoch`` trains
one epoch (``--epochs 1``) over the train split; ``passes`` trains ``--passes`` epochs over the
val split (``--splits val``) in one process, so growth across epochs can be seen within one
process lifetime. Per epoch the JSON gives the peak and the last RssAnon / RssFile / VmRSS and
the fd count; ``growth`` compares the last epoch with the first.

Flat memory means: RssAnon does not grow from one epoch to the next (RssFile grows while the
epoch touches more of the memory map, up to the size of the images, and is page cache).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "benchmarks" / "results" / "bench_load.json"
DEFAULT_DATA = Path(tempfile.gettempdir()) / "cxrcl-load" / "phantom100k_64"
STATUS_KEYS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM", "Threads")


def proc_sample(pid: int) -> dict | None:
    """Memory (MB) and thread count from /proc/PID/status, and the number of open fds."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in STATUS_KEYS:
            v = value.split()[0]
            out[key] = int(v) if key == "Threads" else round(int(v) / 1024, 1)
    if not all(k in out for k in STATUS_KEYS):
        return None  # an exiting (zombie) process has no memory lines left
    out["fds"] = fds
    return out


def last_step(metrics: Path) -> tuple[int, float]:
    """(step, epoch) of the last complete line of metrics.jsonl, (0, 0.0) before the first."""
    try:
        with open(metrics, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return 0, 0.0
    for line in reversed(lines):
        try:
            rec = json.loads(line)
            return int(rec["step"]), float(rec.get("epoch", 0.0))
        except (ValueError, KeyError, TypeError):
            continue
    return 0, 0.0


def monitored_pretrain(cmd: list[str], run_dir: Path, interval: float) -> dict:
    """Run ``cmd``, sampling the child until it exits; returns samples and the exit code."""
    samples = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while proc.poll() is None:
        s = proc_sample(proc.pid)
        if s is not None:
            step, epoch = last_step(run_dir / "metrics.jsonl")
            samples.append({"t": round(time.perf_counter() - t0, 2), "step": step, "epoch": epoch, **s})
        time.sleep(interval)
    output = proc.stdout.read()
    return {"returncode": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1),
            "samples": samples, "output_tail": output[-2000:]}


def per_epoch(samples: list[dict], steps_per_epoch: int) -> list[dict]:
    """Peak and last memory / fds of the samples taken during each epoch (by logged step)."""
    out = []
    n_epochs = max((s["step"] - 1) // steps_per_epoch + 1 for s in samples)
    for e in range(n_epochs):
        rows = [s for s in samples if e * steps_per_epoch < s["step"] <= (e + 1) * steps_per_epoch]
        if not rows:
            continue
        out.append({
            "epoch": e + 1, "samples": len(rows), "steps": [rows[0]["step"], rows[-1]["step"]],
            **{f"peak_{k}_mb": max(r[k] for r in rows) for k in ("VmRSS", "RssAnon", "RssFile")},
            **{f"last_{k}_mb": rows[-1][k] for k in ("VmRSS", "RssAnon", "RssFile")},
            "fds_min": min(r["fds"] for r in rows), "fds_max": max(r["fds"] for r in rows),
        })
    return out


def quarters(trained: list[dict]) -> list[dict]:
    """RssAnon / RssFile / fds at the end of each quarter of the steps this process trained."""
    if not trained:
        return []
    first, last = trained[0]["step"], trained[-1]["step"]
    out = []
    for q in (1, 2, 3, 4):
        rows = [s for s in trained if s["step"] <= first + q * (last - first) / 4]
        if rows:
            r = rows[-1]
            out.append({"quarter": q, "step": r["step"], "RssAnon_mb": r["RssAnon"],
                        "RssFile_mb": r["RssFile"], "VmRSS_mb": r["VmRSS"], "fds": r["fds"]})
    return out


def thin(samples: list[dict], keep: int = 120) -> list[dict]:
    stride = max(1, len(samples) // keep)
    return samples[::stride] + ([samples[-1]] if samples and (len(samples) - 1) % stride else [])


def update_json(path: Path, key: str, section: dict, command: str) -> None:
    result = json.loads(path.read_text()) if path.exists() else {"benchmark": "load"}
    result["script"] = "benchmarks/bench_load.py"
    result[key] = {"command": command, **section}
    result["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                         "python": platform.python_version()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)


def phase_make(args) -> dict:
    from cxrcl.data.phantom import make_phantom
    from cxrcl.data.prepared import PreparedDataset

    data = Path(args.data)
    if (data / "dataset.json").exists():
        ds = PreparedDataset.open(data)
        if len(ds) == args.n and ds.size == args.size:
            print(f"{data} already holds {len(ds)} images at {ds.size} px: reused")
            return {"reused": True, **_describe(ds)}
    t0 = time.perf_counter()
    ds = make_phantom(data, n=args.n, size=args.size, seed=0, progress=False,
                      overwrite=True)  # a set of another n or size is replaced, as before
    return {"generate_s": round(time.perf_counter() - t0, 1), **_describe(ds)}


def _describe(ds) -> dict:
    images_mb = os.path.getsize(ds.root / "images.npy") / 2**20
    return {"data": str(ds.root), "n": len(ds), "size": ds.size, "images_npy_mb": round(images_mb, 1),
            "splits": {s: int(len(ds.indices(s))) for s in ("train", "val", "test")}}


def phase_train(args, split: str, epochs: int) -> dict:
    from cxrcl.data.prepared import PreparedDataset

    ds = PreparedDataset.open(args.data)
    n_images = int(len(ds.indices(split)))
    run = Path(args.run_root) / f"{args.phase}_{split}"
    if run.exists() and not args.resume:
        import shutil

        shutil.rmtree(run)  # our own scratch run from an earlier invocation of this phase
    cmd = [sys.executable, "-m", "cxrcl", "pretrain", "spcl", "--data", str(ds.root), "--out", str(run),
           "--backbone", "vit_tiny_patch16_224", "--image-size", str(args.size),
           "--epochs", str(epochs), "--batch-size", str(args.batch_size), "--splits", split,
           "--log-every", str(args.log_every), "--no-progress"]
    if args.stop_after:
        cmd += ["--stop-after", str(args.stop_after)]
    if args.resume:
        cmd += ["--resume"]
    start_step = last_step(run / "metrics.jsonl")[0] if args.resume else 0
    mon = monitored_pretrain(cmd, run, args.interval)
    if mon["returncode"] != 0:
        raise SystemExit(f"pretrain failed ({mon['returncode']}):\n{mon['output_tail']}")
    summary = json.loads((run / "summary.json").read_text())
    steps_per_epoch = n_images // args.batch_size
    samples = mon["samples"]
    trained = [s for s in samples if s["step"] > start_step]  # logged by this process
    epochs_out = per_epoch(trained, steps_per_epoch)
    section = {
        "pretrain_command": shlex.join(["cxrcl", *cmd[3:]]),
        "split": split, "images_in_split": n_images, "epochs": epochs,
        "batch_size": args.batch_size, "steps_per_epoch": steps_per_epoch,
        "steps_logged_by_this_process": [trained[0]["step"], trained[-1]["step"]],
        "run_summary": {k: summary.get(k) for k in ("steps", "steps_total", "complete", "images_seen",
                                                      "wall_seconds", "images_per_s")},
        "process_wall_s": mon["wall_s"], "sample_interval_s": args.interval, "n_samples": len(samples),
        "peak_VmHWM_mb": max(s["VmHWM"] for s in samples),
        "peak_VmRSS_mb": max(s["VmRSS"] for s in samples),
        "peak_RssAnon_mb": max(s["RssAnon"] for s in samples),
        "peak_RssFile_mb": max(s["RssFile"] for s in samples),
        "fds_while_training": [min(s["fds"] for s in trained), max(s["fds"] for s in trained)],
        "threads_max": max(s["Threads"] for s in samples),
        "per_epoch": epochs_out,
        "quarters_of_training": quarters(trained),
        "samples": thin(samples),
    }
    if len(epochs_out) > 1:
        first, last = epochs_out[0], epochs_out[-1]
        section["growth_last_vs_first_epoch"] = {
            "peak_RssAnon_mb": round(last["peak_RssAnon_mb"] - first["peak_RssAnon_mb"], 1),
            "peak_VmRSS_mb": round(last["peak_VmRSS_mb"] - first["peak_VmRSS_mb"], 1),
            "fds_max": last["fds_max"] - first["fds_max"]}
    q = section["quarters_of_training"]
    if len(q) == 4:
        section["growth_last_vs_second_quarter"] = {
            "RssAnon_mb": round(q[3]["RssAnon_mb"] - q[1]["RssAnon_mb"], 1),
            "fds": q[3]["fds"] - q[1]["fds"]}
    return section


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=["make", "epoch", "passes"])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--passes", type=int, default=3, help="epochs over the val split (phase passes)")
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    ap.add_argument("--run-root", default=str(Path(tempfile.gettempdir()) / "cxrcl-load" / "runs"))
    ap.add_argument("--stop-after", type=int, help="end this process after N steps (checkpointed)")
    ap.add_argument("--resume", action="store_true", help="continue the phase's run (next part)")
    ap.add_argument("--json", default=str(DEFAULT_JSON))
    args = ap.parse_args(argv)
    command = shlex.join(["python", "benchmarks/bench_load.py", *(argv or sys.argv[1:])])
    if args.phase == "make":
        section = phase_make(args)
    elif args.phase == "epoch":
        section = phase_train(args, "train", 1)
    else:
        section = phase_train(args, "val", args.passes)
    key = args.phase + ("_resumed" if args.resume else "_first_part" if args.stop_after else "")
    update_json(Path(args.json), key, section, command)
    shown = {k: v for k, v in section.items() if k not in ("samples", "per_epoch", "quarters_of_training")}
    print(json.dumps(shown, indent=2))
    print(f"wrote {args.json} [{args.phase}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
