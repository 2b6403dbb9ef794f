"""Where the time goes in SparseContrast's CNN variant (ResNet-18, 128 px, batch 32, inference).

Times each part of the pruned forward pass against the dense one, median of 15 repeats after
3 warm-ups, single process, and counts FLOPs of the later stages: dense map vs the kept windows
run as a batch of small maps. Writes benchmarks/results/sparsecontrast/cnn_stages.json.
Usage: .venv/bin/python benchmarks/sparsecontrast_cnn_stages.py     (~1 min on 2 CPU cores)
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from cxrcl.evaluation.efficiency import machine_info
from cxrcl.methods.registry import build_method
from cxrcl.models.saliency import select_top_k

OUT = Path(__file__).parent / "results" / "sparsecontrast" / "cnn_stages.json"


def timed(fn, repeats: int = 15, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def flops(fn) -> float:
    with FlopCounterMode(display=False) as c:
        fn()
    return c.get_total_flops()


@torch.no_grad()
def main() -> None:
    torch.manual_seed(0)
    m = build_method("sparsecontrast:keep_ratio=0.5", "resnet18", 128).eval()
    enc, bb = m.encoder, m.backbone
    x = torch.randn(32, 1, 128, 128)
    fmap = bb.run_stages(bb.stem(x), 0, 1)                       # [32, 64, 32, 32]
    b, c, h, w = fmap.shape
    cells = fmap.flatten(2).transpose(1, 2)
    logits = torch.nn.functional.avg_pool2d(enc.predictor(cells).view(b, 1, h, w), 8).flatten(1)
    keep = select_top_k(logits, 8)
    win = enc.windows(fmap)
    kept = torch.gather(win, 1, keep.view(b, 8, 1, 1, 1).expand(-1, -1, *win.shape[2:])).flatten(0, 1)
    parts = {
        "stem_and_layer1": lambda: bb.run_stages(bb.stem(x), 0, 1),
        "predictor": lambda: enc.predictor(cells),
        "window_gather": lambda: torch.gather(enc.windows(fmap), 1, keep.view(b, 8, 1, 1, 1).expand(-1, -1, *win.shape[2:])),
        "later_stages_dense_map": lambda: bb.run_stages(fmap, 1, None),
        "later_stages_8_of_16_windows": lambda: bb.run_stages(kept, 1, None),
        "full_dense_forward": lambda: bb(x),
        "full_pruned_forward": lambda: enc(x),
    }
    seconds = {k: timed(f) for k, f in parts.items()}
    result = {
        "setup": {"backbone": "resnet18", "image_size": 128, "batch": 32, "keep_ratio": 0.5,
                  "windows": "16 windows of 8x8 cells after layer1 (32x32 map), 8 kept",
                  "torch_threads": torch.get_num_threads()},
        "seconds_median": seconds,
        "gflops": {"later_stages_dense_map": flops(parts["later_stages_dense_map"]) / 1e9,
                   "later_stages_8_of_16_windows": flops(parts["later_stages_8_of_16_windows"]) / 1e9,
                   "full_dense_forward": flops(parts["full_dense_forward"]) / 1e9,
                   "full_pruned_forward": flops(parts["full_pruned_forward"]) / 1e9},
        "machine": machine_info(),
    }
    result["later_stages_speedup"] = seconds["later_stages_dense_map"] / seconds["later_stages_8_of_16_windows"]
    result["later_stages_gflops_per_s"] = {
        k: result["gflops"][k] / seconds[k] for k in ("later_stages_dense_map", "later_stages_8_of_16_windows")}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: round(v * 1000, 1) for k, v in seconds.items()}, indent=1))
    print(f"later stages: {result['later_stages_speedup']:.2f}x faster on the kept windows; wrote {OUT}")


if __name__ == "__main__":
    main()
