"""The machine's measured matmul peak per precision, and the precision a benchmark runs in.

EVALUATION.md asks for achieved FLOP/s against the machine's *measured* matmul peak in the
precision that ran. We measure it (never a data-sheet number): square ``torch.matmul`` at a few
sizes (CPU 512..2048, GPU 4096..8192), the best GFLOP/s of each after warm-up (2 n^3 FLOPs per
product). bf16 is measured on CPU as well: where the CPU has bf16 units (``avx512_bf16`` or
``amx_bf16`` in /proc/cpuinfo) oneDNN runs bf16 matmuls natively; elsewhere they are emulated
and slow, which the measurement shows.

Precision names follow Lightning Fabric: ``32-true`` and ``bf16-mixed`` (autocast to bf16 around
the forward; weights, optimizer and loss reductions stay fp32).
"""

from __future__ import annotations

import contextlib
import time

import torch

from cxrcl.errors import CxrclError

PRECISIONS = ("32-true", "bf16-mixed")
DTYPES = {"32-true": torch.float32, "bf16-mixed": torch.bfloat16}


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16_units() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(dtype: torch.dtype, device: str | torch.device = "cpu", sizes=None,
                  min_seconds: float = 0.3) -> dict:
    """Best measured GFLOP/s of square matmuls in ``dtype``; ``{"gflops", "n", "per_size"}``."""
    device = torch.device(device)
    sizes = sizes or ((4096, 8192) if device.type == "cuda" else (512, 1024, 2048))
    per_size = {}
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        for _ in range(2):
            a @ b
        _sync(device)
        reps, t0 = 0, time.perf_counter()
        while True:
            a @ b
            reps += 1
            if reps % 4 == 0:
                _sync(device)
                if time.perf_counter() - t0 >= min_seconds:
                    break
        dt = time.perf_counter() - t0
        per_size[str(n)] = round(2 * n ** 3 * reps / dt / 1e9, 1)
    best = max(per_size, key=per_size.get)
    return {"gflops": per_size[best], "n": int(best), "per_size": per_size}


def measured_peaks(device: str | torch.device = "cpu") -> dict:
    """``{"32-true": {...}, "bf16-mixed": {...}, "bf16_units": bool}`` for this machine."""
    device = torch.device(device)
    out = {p: matmul_gflops(DTYPES[p], device) for p in PRECISIONS}
    out["bf16_units"] = True if device.type == "cuda" else cpu_has_bf16_units()
    out["bf16_speedup"] = round(out["bf16-mixed"]["gflops"] / out["32-true"]["gflops"], 2)
    return out


def autocast(precision: str, device: torch.device):
    """The context the benchmark runs a step in."""
    if precision == "32-true":
        return contextlib.nullcontext()
    if precision == "bf16-mixed":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise CxrclError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)} or auto")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS + ("auto",):
        raise CxrclError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)} or auto")
    return precision


def choose_precision(peaks: dict, fidelity: dict | None, min_speedup: float = 1.2,
                     max_loss_rel_diff: float = 0.02) -> tuple[str, str]:
    """``auto``: bf16-mixed when the machine has bf16 units, its measured bf16 matmul peak is at
    least ``min_speedup`` times the fp32 one, and the short fidelity check (same init, same
    batches, fp32 vs bf16 losses) stays within ``max_loss_rel_diff``; else 32-true.
    Returns (precision, reason)."""
    if not peaks.get("bf16_units"):
        return "32-true", "no bf16 units"
    if peaks["bf16_speedup"] < min_speedup:
        return "32-true", f"bf16 matmul only {peaks['bf16_speedup']}x fp32 (< {min_speedup})"
    if fidelity is None:
        return "32-true", "no fidelity check"
    if fidelity["max_loss_rel_diff"] > max_loss_rel_diff:
        return "32-true", (f"bf16 losses differ by up to {fidelity['max_loss_rel_diff']:.3f} "
                           f"(> {max_loss_rel_diff})")
    return "bf16-mixed", (f"bf16 matmul {peaks['bf16_speedup']}x fp32 and losses within "
                          f"{fidelity['max_loss_rel_diff']:.4f} of fp32")
