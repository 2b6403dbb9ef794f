"""Momentum (EMA) encoders and a key queue, for MoCo-style methods, DINO and CoMCL.

* :class:`MomentumCopy` -- a frozen copy of online modules, updated as an exponential moving
  average ``key = m * key + (1 - m) * online`` (lightly's ``update_momentum``).
  :func:`momentum_at` gives the cosine schedule of ``m`` from ``start`` to 1 (MoCo v3, BYOL,
  DINO), a pure function of the step so a resumed run is exact.
* :class:`KeyQueue` -- a FIFO of L2-normalised keys. Our own rather than lightly's
  ``MemoryBankModule``, whose buffers are non-persistent: they would be missing from the
  safetensors checkpoint and a resumed run would restart with a random queue. Here the keys and
  the write pointer are persistent buffers, saved with the weights.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn


def momentum_at(step: int, total_steps: int, start: float, end: float = 1.0,
                schedule: str = "cosine") -> float:
    """EMA rate at ``step``: constant ``start``, or cosine from ``start`` to ``end``."""
    if schedule == "constant":
        return float(start)
    if schedule != "cosine":
        raise ValueError(f"momentum schedule must be 'cosine' or 'constant', got {schedule!r}")
    return float(cosine_schedule(min(step, total_steps), max(total_steps, 1), start, end))


class MomentumCopy(nn.Module):
    """EMA copies of ``modules`` (e.g. backbone and projection head), never trained by SGD.

    The copies are deep copies, or ``copies`` (freshly built modules of the same structure, for
    modules that cannot be deep-copied, such as lightly's weight-normalised DINO head), which
    are loaded with the online weights.
    """

    def __init__(self, *modules: nn.Module, copies: Sequence[nn.Module] | None = None):
        super().__init__()
        self.online = list(modules)  # plain list: the online modules are registered by their owner
        if copies is None:
            copies = [copy.deepcopy(m) for m in modules]
        else:
            for online, fresh in zip(modules, copies, strict=True):
                fresh.load_state_dict(online.state_dict())
        self.copies = nn.ModuleList(copies)
        deactivate_requires_grad(self.copies)

    @torch.no_grad()
    def update(self, m: float) -> None:
        """``copy = m * copy + (1 - m) * online`` for every parameter; buffers (batch-norm
        statistics) are copied from the online modules."""
        if not 0.0 <= m <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {m}")
        for online, ema in zip(self.online, self.copies, strict=True):
            update_momentum(online, ema, m)
            for b_online, b_ema in zip(online.buffers(), ema.buffers(), strict=True):
                b_ema.copy_(b_online)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.copies:
            x = module(x)
        return x

    def __getitem__(self, i: int) -> nn.Module:
        return self.copies[i]


class KeyQueue(nn.Module):
    """FIFO of ``size`` L2-normalised keys of dimension ``dim`` (persistent buffers)."""

    def __init__(self, size: int, dim: int, seed: int = 0):
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("keys", F.normalize(torch.randn(size, dim, generator=g), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, keys: torch.Tensor) -> None:
        """Enqueue keys [N, dim] (normalised here), overwriting the oldest; wraps around."""
        keys = F.normalize(keys.detach().to(self.keys.dtype), dim=1)
        size = self.keys.shape[0]
        if keys.shape[0] > size:
            keys = keys[-size:]
        n, ptr = keys.shape[0], int(self.ptr)
        idx = (torch.arange(n, device=keys.device) + ptr) % size
        self.keys[idx] = keys
        self.ptr.fill_((ptr + n) % size)
        self.filled.fill_(min(size, int(self.filled) + n))
