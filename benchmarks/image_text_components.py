"""Where the forward FLOPs of one training step go, per image-report method (and MAE).

`cxrcl bench` reports the whole training step; for the image-report methods the text encoder
is a large, shared part of it, which hides what masking saves on the image side. This script
runs ONE training step of each method (no gradients, the same batch and seed as `cxrcl bench`)
with the image encoder, the text encoder and the MAE decoder wrapped, and counts each part's
FLOPs with torch.utils.flop_counter, together with the number of patch tokens the image encoder
was given per image. Usage:

    python benchmarks/image_text_components.py --data PREPARED --methods clip,sista,maco,mae \
        --backbone vit_tiny_patch16_224 --image-size 128 --batch-size 32 --out OUT.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from cxrcl.data.normalize import to_model_input
from cxrcl.data.prepared import PreparedDataset
from cxrcl.io import atomic_write_json
from cxrcl.methods.registry import build_method
from cxrcl.training.batches import step_generator


def wrap(obj, attr: str, bucket: dict, key: str, on_call=None) -> None:
    """Replace ``obj.attr`` by a version that adds its FLOPs to ``bucket[key]``."""
    original = getattr(obj, attr)

    def counted(*args, **kwargs):
        if on_call:
            on_call(*args, **kwargs)
        with FlopCounterMode(display=False) as c:
            out = original(*args, **kwargs)
        bucket[key] = bucket.get(key, 0) + c.get_total_flops()
        return out

    setattr(obj, attr, counted)


def components(spec: str, backbone: str, image_size: int, x: torch.Tensor, rows: np.ndarray,
               ds: PreparedDataset, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    m = build_method(spec, backbone, image_size)
    m.set_batch_rows(rows, ds)
    flops: dict[str, int] = {}
    tokens: list[int] = []
    n = m.backbone.num_tokens

    def record_tokens(tok, keep=None):
        tokens.append(n if keep is None else int(keep.shape[1]))

    wrap(m.backbone, "encode", flops, "image_encoder", record_tokens)
    wrap(m.backbone, "embed", flops, "patch_embed")
    if hasattr(m, "text_features"):
        wrap(m, "text_features", flops, "text_encoder")
    if hasattr(m, "decoder"):
        wrap(m.decoder, "forward", flops, "mae_decoder")
    with torch.no_grad(), FlopCounterMode(display=False) as total:
        m.training_step(x, step_generator(seed, 0, 0, x.device))
    b = x.shape[0]
    cls = type(m.backbone)
    with torch.no_grad():
        all_tokens = cls.embed(m.backbone, x)
        with FlopCounterMode(display=False) as full:  # the encoder on ALL tokens (CLIP's input)
            cls.encode(m.backbone, all_tokens)
    out = {f"{k}_gflops_per_image": v / b / 1e9 for k, v in flops.items()}
    out["other_gflops_per_image"] = (total.get_total_flops() - sum(flops.values())) / b / 1e9  # heads, losses, SISTA's similarity pass
    out.update(total_gflops_per_image=total.get_total_flops() / b / 1e9,
               encoder_passes=len(tokens), patch_tokens_per_pass=tokens, patch_tokens_of_image=n,
               all_tokens_image_encoder_gflops_per_image=full.get_total_flops() / b / 1e9)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--methods", default="clip,sista,maco,mae")
    ap.add_argument("--backbone", default="vit_tiny_patch16_224")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    ds = PreparedDataset.open(a.data)
    rows = ds.indices("train")[:a.batch_size]
    x = to_model_input(np.ascontiguousarray(ds.images[rows]), a.image_size)
    result = {"setup": {"data": str(ds.root), "backbone": a.backbone, "image_size": a.image_size,
                        "batch_size": a.batch_size, "seed": 0, "note": "forward FLOPs of one training "
                        "step, no gradients; image_encoder = the ViT blocks (+ final norm) on the tokens "
                        "each method gives it"},
              "methods": {}}
    for spec in a.methods.split(","):
        result["methods"][spec] = components(spec, a.backbone, a.image_size, x, rows, ds)
        print(spec, json.dumps(result["methods"][spec]), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(a.out), result)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
