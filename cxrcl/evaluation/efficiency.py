"""Efficiency, measured side by side in ONE process (EVALUATION.md).

For every method: the same backbone, batch, image size, precision and input batch; after
warm-up, training steps (forward + backward + AdamW step) and inference passes are timed in
*interleaved* rounds (A, B, A, B, ...) so drift of the machine hits every method alike; the
median is reported. FLOPs are counted with ``torch.utils.flop_counter`` (matmul, conv and
attention kernels): ``gflops_per_image`` is the forward pass of the training view set divided
by the batch size, ``train_gflops_per_step`` includes the backward pass. ``peak_rss_mb`` is the
peak resident memory of a fresh process that runs three training steps of that method alone
(one process can only report its own lifetime peak); ``train_rss_mb`` is that peak minus the
same process's peak before the model was built (the libraries' share is the same for all).

Against the hardware (:mod:`cxrcl.evaluation.peak`): the machine's matmul peak is measured in
fp32 and bf16 before and after the timing, the higher kept (``machine.matmul_peak``); ``achieved_gflops_per_s`` is the counted training FLOPs
of one step (forward + backward, about 3x the forward: our convention is the counter's exact
count, and ``achieved_gflops_per_s_3x_forward`` gives the 3x-forward estimate beside it) over the
median step time; ``achieved_fraction_of_peak`` divides it by the measured peak *of the precision
that ran* (``fraction_of_fp32_peak`` / ``fraction_of_bf16_peak`` give both). ``precision``
``auto`` runs bf16-mixed only where :func:`cxrcl.evaluation.peak.choose_precision` allows it:
bf16 units, a measured bf16 matmul speed-up, and a fidelity check (the first method, same init
and batches, 5 steps in fp32 and bf16: losses within 2 %) recorded under ``precision_check``.
Inference is also timed at batch 1 and batch 64 (``infer_images_per_s_b1``, ``_b64``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import resource
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from cxrcl.data.normalize import to_model_input
from cxrcl.data.prepared import PreparedDataset
from cxrcl.errors import CxrclError
from cxrcl.evaluation.peak import autocast, check_precision, choose_precision, measured_peaks
from cxrcl.methods.registry import build_method
from cxrcl.training.batches import step_generator
from cxrcl.training.fit import param_groups


def measured_matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - t) / 1e9


def machine_info(peaks: dict | None = None) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "platform": platform.platform(),
            "matmul_peak_gflops": peaks["32-true"]["gflops"] if peaks else round(measured_matmul_gflops(), 1),
            **({"matmul_peak": peaks} if peaks else {})}


def _train_step(method, optimizer, x, seed, step, precision: str = "32-true"):
    with autocast(precision, x.device):
        logs = method.training_step(x, step_generator(seed, step, 0, x.device))
    optimizer.zero_grad(set_to_none=True)
    logs["loss"].float().backward()
    optimizer.step()
    return float(logs["loss"].detach().float())


def precision_check(spec: str, backbone: str, image_size: int, x: torch.Tensor, seed: int = 0,
                    steps: int = 5, rows=None, ds=None) -> dict:
    """Same init, same batches: ``steps`` training steps in fp32 and in bf16-mixed; the losses
    and their largest relative difference (a fidelity check of bf16 on this method)."""
    losses = {}
    for precision in ("32-true", "bf16-mixed"):
        torch.manual_seed(seed)
        m = build_method(spec, backbone, image_size).to(x.device)
        if ds is not None:
            m.set_batch_rows(rows, ds)
        opt = torch.optim.AdamW(param_groups(m, 0.05), lr=1e-4)
        losses[precision] = [_train_step(m, opt, x, seed, s, precision) for s in range(steps)]
    diff = [abs(b - a) / max(abs(a), 1e-8) for a, b in zip(losses["32-true"], losses["bf16-mixed"], strict=True)]
    return {"method": spec, "steps": steps, "loss_fp32": losses["32-true"], "loss_bf16": losses["bf16-mixed"],
            "max_loss_rel_diff": max(diff)}


def _timed(fn, device: torch.device) -> float:
    """Wall seconds of ``fn()``, waiting for the GPU to finish when there is one."""
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def _count_flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _high_water_mb() -> float:
    """This process's peak resident memory. /proc's VmHWM belongs to the current image; on
    Linux ``ru_maxrss`` survives fork+exec and would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss_child(method: str, backbone: str, image_size: int, batch: np.ndarray, queue,
                    data: str | None = None, rows: np.ndarray | None = None) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = _high_water_mb()
    m = build_method(method, backbone, image_size)
    if data is not None:  # the batch's data set rows, as the training loop gives them (reports)
        m.set_batch_rows(rows, PreparedDataset.open(data))
    opt = torch.optim.AdamW(param_groups(m, 0.05), lr=1e-4)
    x = to_model_input(batch, image_size)
    for step in range(3):
        _train_step(m, opt, x, 0, step)
    queue.put((_high_water_mb(), base))


def peak_rss_mb(method: str, backbone: str, image_size: int, batch: np.ndarray,
                data: str | None = None, rows: np.ndarray | None = None) -> tuple[float, float]:
    """(peak RSS, peak RSS before the model was built) in MiB, from a fresh process."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_rss_child, args=(method, backbone, image_size, batch, q, data, rows))
    p.start()
    peak, base = q.get(timeout=900)
    p.join()
    return round(peak, 1), round(base, 1)


def benchmark(methods: list[str], data: str, backbone: str, image_size: int | None = None,
              batch_size: int = 64, steps: int = 10, warmup: int = 2, seed: int = 0,
              measure_memory: bool = True, reference: str | None = None, progress=print,
              precision: str = "32-true") -> dict:
    """Time, count and compare ``methods``; returns the CLI.md bench JSON.

    Ratios are against ``reference`` (default: ``simclr`` when benchmarked, else the first).
    ``precision``: ``32-true``, ``bf16-mixed`` or ``auto`` (see the module docstring).
    """
    check_precision(precision)
    if reference is not None and reference not in methods:
        raise CxrclError(f"--reference {reference} is not one of the benchmarked methods: {', '.join(methods)}")
    ds = PreparedDataset.open(data)
    image_size = image_size or ds.size
    rows = ds.indices("train")[:batch_size]
    batch = np.ascontiguousarray(ds.images[rows])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x = to_model_input(batch, image_size, device)
    peaks = measured_peaks(device)
    fidelity = None
    if precision == "auto" or precision == "bf16-mixed":
        fidelity = precision_check(methods[0], backbone, image_size, x, seed, rows=rows, ds=ds)
    reason = f"{precision} requested"
    if precision == "auto":
        precision, reason = choose_precision(peaks, fidelity)
    if progress:
        progress(f"precision {precision} ({reason}); matmul peak fp32 {peaks['32-true']['gflops']} GFLOP/s, "
                 f"bf16 {peaks['bf16-mixed']['gflops']} GFLOP/s")
    x64 = to_model_input(np.resize(batch, (64, *batch.shape[1:])), image_size, device)
    built = {}
    for spec in methods:
        torch.manual_seed(seed)
        m = build_method(spec, backbone, image_size).to(device)
        m.set_batch_rows(rows, ds)  # as the training loop does (image-report methods read reports)
        built[spec] = (m, torch.optim.AdamW(param_groups(m, 0.05), lr=1e-4))

    result: dict[str, dict] = {spec: {} for spec in methods}
    for spec, (m, opt) in built.items():
        with torch.no_grad():
            fwd = _count_flops(lambda m=m: m.training_step(x, step_generator(seed, 0, 0, device)))
        train = _count_flops(lambda m=m, opt=opt: _train_step(m, opt, x, seed, 0))
        infer = _count_flops(lambda m=m: m.encoder(x))
        result[spec].update(gflops_per_image=fwd / batch_size / 1e9,
                            train_gflops_per_step=train / 1e9,
                            infer_gflops_per_image=infer / batch_size / 1e9)

    step_times: dict[str, list[float]] = {s: [] for s in methods}
    infer_times: dict[str, list[float]] = {s: [] for s in methods}
    b1_times: dict[str, list[float]] = {s: [] for s in methods}
    b64_times: dict[str, list[float]] = {s: [] for s in methods}
    for r in range(warmup + steps):
        for spec, (m, opt) in built.items():
            m.train()
            dt = _timed(lambda m=m, opt=opt, r=r: _train_step(m, opt, x, seed, r + 1, precision), device)
            m.eval()
            with torch.no_grad(), autocast(precision, device):
                di = _timed(lambda m=m: m.encoder(x), device)
                d1 = statistics.median(_timed(lambda m=m: m.encoder(x[:1]), device) for _ in range(5))
                d64 = _timed(lambda m=m: m.encoder(x64), device)
            if r >= warmup:
                step_times[spec].append(dt)
                infer_times[spec].append(di)
                b1_times[spec].append(d1)
                b64_times[spec].append(d64)
        if progress:
            progress(f"round {r + 1}/{warmup + steps}" + (" (warm-up)" if r < warmup else ""))

    for spec in methods:
        st, it = statistics.median(step_times[spec]), statistics.median(infer_times[spec])
        result[spec].update(train_step_s=st, train_images_per_s=batch_size / st,
                            infer_images_per_s=batch_size / it,
                            infer_images_per_s_b1=1 / statistics.median(b1_times[spec]),
                            infer_images_per_s_b64=64 / statistics.median(b64_times[spec]),
                            train_step_s_iqr=float(np.subtract(*np.percentile(step_times[spec], [75, 25]))))
    # the peak is measured again after the timing and the higher of the two kept: on a shared
    # machine one measurement can fall in a busy moment (both are recorded)
    after = measured_peaks(device)
    for p in ("32-true", "bf16-mixed"):
        peaks[p] = {**max(peaks[p], after[p], key=lambda d: d["gflops"]),
                    "before_gflops": peaks[p]["gflops"], "after_gflops": after[p]["gflops"]}
    peaks["bf16_speedup"] = round(peaks["bf16-mixed"]["gflops"] / peaks["32-true"]["gflops"], 2)
    machine = machine_info(peaks)
    for spec in methods:
        r = result[spec]
        r["achieved_gflops_per_s"] = r["train_gflops_per_step"] / r["train_step_s"]
        r["achieved_gflops_per_s_3x_forward"] = 3 * r["gflops_per_image"] * r["train_images_per_s"]
        r["achieved_fraction_of_peak"] = r["achieved_gflops_per_s"] / peaks[precision]["gflops"]
        r["fraction_of_fp32_peak"] = r["achieved_gflops_per_s"] / peaks["32-true"]["gflops"]
        r["fraction_of_bf16_peak"] = r["achieved_gflops_per_s"] / peaks["bf16-mixed"]["gflops"]
        r["precision"] = precision
        if measure_memory and device.type == "cpu":
            r["peak_rss_mb"], base = peak_rss_mb(spec, backbone, image_size, batch, str(ds.root), rows)
            r["train_rss_mb"] = round(r["peak_rss_mb"] - base, 1)  # attributable to training
        elif device.type == "cuda":
            r["peak_rss_mb"] = None
    ref = reference or ("simclr" if "simclr" in methods else methods[0])
    ratios = {spec: {"train_images_per_s": result[spec]["train_images_per_s"] / result[ref]["train_images_per_s"],
                     "infer_images_per_s": result[spec]["infer_images_per_s"] / result[ref]["infer_images_per_s"],
                     "gflops_per_image": result[spec]["gflops_per_image"] / result[ref]["gflops_per_image"]}
              for spec in methods}
    return {"methods": result, "ratios_vs": ref, "ratios": ratios, "machine": machine,
            "setup": {"backbone": backbone, "image_size": image_size, "batch_size": batch_size,
                      "steps": steps, "warmup": warmup, "data": str(ds.root),
                      "precision": precision, "precision_reason": reason, "device": str(device),
                      "flops_convention": "train FLOPs per step counted by torch.utils.flop_counter "
                                          "(forward + backward, ~3x forward); peak = measured square "
                                          "matmul GFLOP/s in the precision that ran"},
            "precision_check": fidelity}
