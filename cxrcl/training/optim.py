"""The optimiser's parameter groups and the learning-rate schedule (AdamW, warm-up + cosine).

Weight decay: timm's ``param_groups_weight_decay`` excludes 1-D parameters (biases, norms)
and whatever the modules declare in ``no_weight_decay()`` (timm ViTs list ``pos_embed``,
``cls_token``, ``reg_token``; a method may list its own, e.g. a learnable temperature), with the
names prefixed by where the module sits in the method.
"""

from __future__ import annotations

import math

from timm.optim import param_groups_weight_decay
from torch import nn


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full parameter names that any sub-module lists in its ``no_weight_decay()``."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        declared = getattr(module, "no_weight_decay", None)
        if callable(declared):
            names |= {f"{prefix}.{n}" if prefix else n for n in declared()}
    return names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weights, and the rest (1-D, tokens, position embeddings)."""
    return param_groups_weight_decay(model, weight_decay,
                                     no_weight_decay_list=sorted(no_weight_decay_names(model)))


def warmup_cosine(total: int, warmup_fraction: float, min_fraction: float):
    """LR factor of step ``s``: linear warm-up over ``warmup_fraction`` of ``total`` steps, then
    a cosine from 1 to ``min_fraction`` at ``total``."""
    warmup = max(1, int(round(total * warmup_fraction)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return factor
