"""Does the image-report contrast learn or collapse at a given learning rate? (MaCo vs CLIP)

A stability check behind the lr in configs/methods/maco.yaml, on the phantom's TRAIN split only
(training losses; no validation or test images are looked at). Each run: the real training
loop (`cxrcl.training.fit.pretrain`), a depth-2 ViT-Tiny/8 at 64 px, batch 16, 30 steps, frozen
MiniLM text encoder (for CPU time). A contrastive loss that sits at ln(batch) means the logits
are uniform: the contrast has collapsed. Usage:

    python benchmarks/maco_lr_check.py --out benchmarks/results/image_text/lr_check.json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from cxrcl.data.phantom import make_phantom
from cxrcl.io import atomic_write_json
from cxrcl.training.fit import pretrain

BACKBONE = "vit_tiny_patch16_224:patch_size=8:depth=2"
TEXT = "text_trainable_layers=0:text_max_length=48"


def contrastive_curve(run: Path, key: str) -> list[float]:
    return [round(json.loads(line)[key], 4) for line in open(run / "metrics.jsonl")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lrs", default="0.001,0.0001")
    a = ap.parse_args()
    batch = 16
    result = {"setup": {"data": "phantom n=96, 64 px, seed 0, train split", "backbone": BACKBONE,
                        "image_size": 64, "batch_size": batch, "steps": a.steps, "text": TEXT,
                        "ln_batch": math.log(batch)}, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_phantom(Path(tmp) / "phantom", n=96, size=64, seed=0)
        for lr in [float(x) for x in a.lrs.split(",")]:
            for method, key in (("clip", "loss"), ("maco", "contrastive")):
                run = Path(tmp) / f"{method}_{lr}"
                pretrain(f"{method}:{TEXT}", data.root, run, backbone=BACKBONE, image_size=64,
                         train_overrides=dict(steps=a.steps, batch_size=batch, lr=lr, log_every=5,
                                              checkpoint_every=10_000, progress=False))
                curve = contrastive_curve(run, key)
                result["runs"].append({"method": method, "lr": lr, "contrastive_every_5_steps": curve,
                                       "final_minus_ln_batch": round(curve[-1] - math.log(batch), 4)})
                print(result["runs"][-1], flush=True)
    atomic_write_json(Path(a.out), result)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
