"""Loader throughput against training throughput, in one process: is the data path ever the
bottleneck?

    python benchmarks/bench_loader.py                         # phantom 4096 x 128 px, 50 batches
    python benchmarks/bench_loader.py --data prepared/nih14_128 --steps 100
    python benchmarks/bench_loader.py --n 512 --steps 10 --train-steps 2   # quick check

Loader: random batches of ``--batch`` rows of the train split through
:class:`cxrcl.training.batches.BatchStream` (memory-mapped read of sorted rows) ->
:func:`cxrcl.data.normalize.to_model_input` -> one :func:`cxrcl.data.views.augment` call (the
CXR augmentations), on the training device; images/s over ``--steps`` batches after one warm-up
batch, with the time split into read / to_model_input / augment.

Training: for each of ``--methods`` (default simclr and spcl), ``build_method(method,
--backbone, --image-size)`` forward + backward + AdamW step on a batch of ``--batch``; the
median of ``--train-steps`` timed steps after one warm-up step, methods interleaved step by
step -> images/s.

Ratio = loader images/s / training images/s (the issue asks for >= 10x, so the loader costs
<= 10 % of a step even when it runs in the training process). Without ``--data`` a phantom of
``--n`` images at ``--image-size`` px is made in a temp dir (warm page cache: this measures the
code, not the disk). Both sides use the same torch thread count (recorded). Results go to
``--json`` (default benchmarks/results/loader_throughput.json) with the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cxrcl.data.normalize import to_model_input
from cxrcl.data.phantom import make_phantom
from cxrcl.data.prepared import PreparedDataset
from cxrcl.data.views import augment
from cxrcl.methods.registry import build_method
from cxrcl.training.batches import BatchStream, step_generator
from cxrcl.training.fit import param_groups


def bench_loader(ds: PreparedDataset, batch: int, image_size: int, steps: int, device) -> dict:
    rows = ds.indices("train")
    if len(rows) < batch:
        rows = ds.indices()
    stream = BatchStream(ds.images, rows, batch, seed=0)
    parts = {"read": 0.0, "to_model_input": 0.0, "augment": 0.0}
    for step in range(steps + 1):  # step 0 warms up
        t0 = time.perf_counter()
        b = stream.batch(step)
        t1 = time.perf_counter()
        x = to_model_input(b, image_size, device)
        t2 = time.perf_counter()
        v = augment(x, step_generator(0, step, 0, device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        t3 = time.perf_counter()
        assert v.shape == (batch, 1, image_size, image_size)
        if step:
            parts["read"] += t1 - t0
            parts["to_model_input"] += t2 - t1
            parts["augment"] += t3 - t2
    total = sum(parts.values())
    return {"batches": steps, "batch_size": batch, "images_per_s": round(steps * batch / total, 1),
            "seconds": round(total, 3),
            "share": {k: round(v / total, 3) for k, v in parts.items()},
            "images_per_s_by_part": {k: round(steps * batch / v, 1) for k, v in parts.items() if v > 0}}


def bench_train(methods: list[str], backbone: str, ds: PreparedDataset, batch: int, image_size: int,
                steps: int, device) -> dict:
    """Training images/s per method; steps run in interleaved rounds (A, B, A, B, ...) so that
    drift of a shared machine hits every method alike."""
    rows = ds.indices("train")
    rows = rows if len(rows) >= batch else ds.indices()
    x = to_model_input(np.ascontiguousarray(ds.images[np.sort(rows[:batch])]), image_size, device)
    built = {}
    for method in methods:
        torch.manual_seed(0)
        m = build_method(method, backbone, image_size).to(device)
        built[method] = (m, torch.optim.AdamW(param_groups(m, 0.05), lr=1e-4))
    times: dict[str, list[float]] = {m: [] for m in methods}
    for step in range(steps + 1):  # step 0 warms up
        for method, (m, opt) in built.items():
            t = time.perf_counter()
            logs = m.training_step(x, step_generator(0, step, 0, device))
            opt.zero_grad(set_to_none=True)
            logs["loss"].backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step:
                times[method].append(time.perf_counter() - t)
    out = {}
    for method in methods:
        med = statistics.median(times[method])
        out[method] = {"method": method, "steps": steps, "step_s_median": round(med, 4),
                       "step_s_all": [round(t, 4) for t in times[method]], "images_per_s": round(batch / med, 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a prepared data set (default: a phantom made in a temp dir)")
    ap.add_argument("--n", type=int, default=4096, help="phantom size when --data is not given")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50, help="timed loader batches")
    ap.add_argument("--train-steps", type=int, default=5, help="timed training steps per method")
    ap.add_argument("--methods", default="simclr,spcl")
    ap.add_argument("--backbone", default="vit_tiny_patch16_224")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "loader_throughput.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"loader benchmark: {command}\n  device {device}, torch threads {torch.get_num_threads()}, "
          f"load average {load}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        if args.data:
            ds = PreparedDataset.open(args.data)
            data = {"path": str(ds.root), "n": len(ds), "size": ds.size, "made": False}
        else:
            t = time.perf_counter()
            ds = make_phantom(Path(tmp) / "phantom", n=args.n, size=args.image_size, seed=0)
            data = {"path": "phantom (temp)", "n": len(ds), "size": ds.size, "made": True,
                    "make_seconds": round(time.perf_counter() - t, 1)}
        loader = bench_loader(ds, args.batch, args.image_size, args.steps, device)
        print(f"  loader (BatchStream + to_model_input + augment): {loader['images_per_s']:.0f} images/s "
              f"(shares {loader['share']})", flush=True)
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        train = bench_train(methods, args.backbone, ds, args.batch, args.image_size, args.train_steps, device)
        for method, r in train.items():
            r["loader_to_train_ratio"] = round(loader["images_per_s"] / r["images_per_s"], 1)
            print(f"  train {method} ({args.backbone} @ {args.image_size}px, batch {args.batch}): "
                  f"{r['images_per_s']:.1f} images/s -> loader is {r['loader_to_train_ratio']}x faster", flush=True)
        del ds
    ratios = {m: r["loader_to_train_ratio"] for m, r in train.items()}
    result = {"benchmark": "loader_throughput", "command": command,
              "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "device": str(device), "torch": torch.__version__,
                          "platform": platform.platform(), "load_average_at_start": load,
                          "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
              "setup": {"image_size": args.image_size, "batch": args.batch, "backbone": args.backbone,
                        "data": data},
              "loader": loader, "train": train, "ratios": ratios,
              "target_ratio": 10, "meets_target": all(v >= 10 for v in ratios.values())}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"ratios loader/train: {ratios} (target >= 10); wrote {args.json}")


if __name__ == "__main__":
    main()
