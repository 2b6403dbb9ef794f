"""Deterministic batches from a prepared data set: batch ``step`` is a pure function of
(seed, step), so a resumed run reads exactly what the killed one would have, and DDP ranks take
disjoint slices of one global batch."""

from __future__ import annotations

import numpy as np
import torch

from cxrcl.errors import CxrclError


class BatchStream:
    """Global batches of ``batch_size * world_size`` rows drawn without replacement per epoch."""

    def __init__(self, images: np.ndarray, rows: np.ndarray, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.images, self.rows = images, np.asarray(rows)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world_size
        self.global_batch = batch_size * world_size
        if len(self.rows) < self.global_batch:
            raise CxrclError(f"the pre-training split has {len(self.rows)} images, fewer than one global "
                             f"batch of {self.global_batch}: lower --batch-size")
        self.steps_per_epoch = len(self.rows) // self.global_batch  # the ragged tail is dropped
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.rows)
            self._perm_epoch = epoch
        return self._perm

    def rows_for(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.steps_per_epoch)
        g = self._permutation(epoch)[i * self.global_batch:(i + 1) * self.global_batch]
        return np.sort(g[self.rank * self.batch_size:(self.rank + 1) * self.batch_size])

    def batch(self, step: int) -> torch.Tensor:
        """uint8 [B, H, W] (sorted row order reads the memory map sequentially)."""
        return torch.from_numpy(np.ascontiguousarray(self.images[self.rows_for(step)]))

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch


def step_generator(seed: int, step: int, rank: int, device) -> torch.Generator:
    """The generator for every random draw of one step on one rank."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))
    return g
