"""All-gather across DDP ranks with gradient (lightly's ``GatherLayer``); identity on one process."""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightly.utils.dist import gather as _lightly_gather


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0; gradients flow back to their owners."""
    if world_size() == 1:
        return x
    return torch.cat(_lightly_gather(x.contiguous()), dim=0)
