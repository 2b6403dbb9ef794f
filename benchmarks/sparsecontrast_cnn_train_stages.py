"""Why SparseContrast's CNN variant trains slower than its dense counterpart (ResNet-18, 128 px).

The training counterpart of ``sparsecontrast_cnn_stages.py`` (which times the forward pass
only): each part of a training step's backbone pass is timed forward + backward, dense vs
pruned (keep 0.5: 8 of 16 windows of 8x8 cells after ``layer1``), on a batch of 64 images (the
two views of a batch of 32, as one training step), median of 5 repeats after 2 warm-ups, one
process. The projection head, loss and optimiser are the same for both and left out.
Writes benchmarks/results/sparsecontrast/cnn_train_stages.json.
Usage: .venv/bin/python benchmarks/sparsecontrast_cnn_train_stages.py     (~2 min on 2 CPU cores)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from sparsecontrast_cnn_stages import timed as forward_timed  # benchmarks/ is on the path when run

from cxrcl.evaluation.efficiency import machine_info
from cxrcl.methods.registry import build_method
from cxrcl.models.saliency import select_top_k

OUT = Path(__file__).parent / "results" / "sparsecontrast" / "cnn_train_stages.json"


def timed(fn) -> float:
    """Median of 5 repeats after 2 warm-ups (the forward-only script's timer, fewer repeats)."""
    return forward_timed(fn, repeats=5, warmup=2)


def main() -> None:
    torch.manual_seed(0)
    m = build_method("sparsecontrast:keep_ratio=0.5", "resnet18", 128).train()
    enc, bb = m.encoder, m.backbone
    x = torch.randn(64, 1, 128, 128)
    with torch.no_grad():
        fmap = bb.run_stages(bb.stem(x), 0, 1)                       # [64, 64, 32, 32]
        b, c, h, w = fmap.shape
        logits = torch.nn.functional.avg_pool2d(
            enc.predictor(fmap.flatten(2).transpose(1, 2)).view(b, 1, h, w), 8).flatten(1)
        keep = select_top_k(logits, 8)
        win = enc.windows(fmap)
        kept = torch.gather(win, 1, keep.view(b, 8, 1, 1, 1).expand(-1, -1, *win.shape[2:])).flatten(0, 1)
    gen = torch.Generator().manual_seed(0)

    def fwd_bwd(fn, leaf=None):
        def step():
            m.zero_grad(set_to_none=True)
            inp = None if leaf is None else leaf.detach().requires_grad_()
            out = fn() if inp is None else fn(inp)
            out.float().sum().backward()
        return step

    parts = {
        "stem_and_layer1": fwd_bwd(lambda: bb.run_stages(bb.stem(x), 0, 1)),
        "predictor_and_window_gather": fwd_bwd(lambda f: torch.gather(
            enc.windows(f), 1, keep.view(b, 8, 1, 1, 1).expand(-1, -1, *win.shape[2:]))
            * enc.predictor(f.flatten(2).transpose(1, 2)).mean(), fmap),
        "later_stages_dense_map": fwd_bwd(lambda f: bb.run_stages(f, 1, None), fmap),
        "later_stages_8_of_16_windows": fwd_bwd(lambda k: bb.run_stages(k, 1, None), kept),
        "full_dense": fwd_bwd(lambda: bb(x)),
        "full_pruned": fwd_bwd(lambda: enc.run(x, 0.5, generator=gen, noise=1.0, straight_through=True).features),
    }
    seconds = {k: timed(f) for k, f in parts.items()}
    result = {
        "setup": {"backbone": "resnet18", "image_size": 128, "batch": 64, "keep_ratio": 0.5, "mode": "train",
                  "measures": "forward + backward of the backbone pass (sum of outputs), median of 5",
                  "windows": "16 windows of 8x8 cells after layer1 (32x32 map), 8 kept",
                  "torch_threads": torch.get_num_threads()},
        "seconds_median": seconds,
        "later_stages_speedup": seconds["later_stages_dense_map"] / seconds["later_stages_8_of_16_windows"],
        "full_speedup": seconds["full_dense"] / seconds["full_pruned"],
        "machine": machine_info(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: round(v * 1000, 1) for k, v in seconds.items()}, indent=1))
    print(f"later stages {result['later_stages_speedup']:.2f}x, whole pass {result['full_speedup']:.2f}x; wrote {OUT}")


if __name__ == "__main__":
    main()
