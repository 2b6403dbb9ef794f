"""InfoNCE / NT-Xent with negatives gathered across DDP ranks (with gradient).

One loss for every contrastive method in cxrcl, in three forms:

* plain: ``targets=None, weights=None`` -- the positive of query i is key i; every other key in
  the (globally gathered) batch is a negative. With ``intra_view_negatives=True`` the other
  queries are negatives too, which is exactly SimCLR's NT-Xent (2N-2 negatives; tested against
  lightly's ``NTXentLoss``).
* soft targets: ``targets`` [N, N_global] is a row-stochastic matrix (e.g. SISTA's report-report
  similarity); the loss is the cross-entropy between it and the softmax over keys. Identity
  targets give the plain loss exactly.
* weighted: ``weights`` [N] scales each sample's loss (e.g. CoMCL's self-paced weights); the loss
  is ``sum(w * l) / sum(w)``. All-ones weights give the plain loss exactly.

Precision: the similarities, the log-sum-exp and the loss are computed in float32 with autocast
disabled, also inside a ``bf16-mixed`` run (a ``.float()`` cast alone is undone by autocast on the
next matmul, and bf16 logits lose the small differences between near-identical negatives).

Distributed: embeddings are all-gathered with lightly's ``GatherLayer`` (gradients flow back to
the rank that produced them). Each rank returns the mean over its local queries; DDP averages the
gradients over ranks, so W processes on N samples each get the same loss and gradient as one
process on the concatenated W*N batch (tested with 2 CPU processes over gloo).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cxrcl.losses.gather import gather_with_grad, rank


def info_nce(
    q: torch.Tensor,
    k: torch.Tensor,
    temperature: float | torch.Tensor = 0.1,
    *,
    targets: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    symmetric: bool = True,
    intra_view_negatives: bool = False,
    gather: bool = True,
) -> torch.Tensor:
    """Contrast queries ``q`` [N, D] with keys ``k`` [N, D] (row i of each is a positive pair).

    Args:
        temperature: a float or a scalar tensor (a learnable one is passed as a tensor).
        targets: optional soft targets [N, N_global] over the gathered keys (rows sum to 1).
        weights: optional per-sample weights [N] (>= 0).
        symmetric: average the q->k and k->q directions (as CLIP and S-PCL do).
        intra_view_negatives: also use the other queries as negatives (SimCLR's NT-Xent).
        gather: gather keys across DDP ranks when a process group is initialised.

    >>> q, k = torch.randn(8, 16), torch.randn(8, 16)
    >>> loss = info_nce(q, k, 0.1)
    """
    if q.ndim != 2 or q.shape != k.shape:
        raise ValueError(f"q and k must both be [N, D]; got {tuple(q.shape)} and {tuple(k.shape)}")
    if targets is not None and intra_view_negatives:
        raise ValueError("soft targets are defined over keys only; use intra_view_negatives=False")
    with torch.autocast(device_type=q.device.type, enabled=False):
        return _info_nce_fp32(q, k, temperature, targets, weights, symmetric, intra_view_negatives,
                              gather)


class Pairs(NamedTuple):
    """The float32 inputs of one InfoNCE computation (see :func:`contrast_pairs`)."""

    temperature: float | torch.Tensor
    q: torch.Tensor  # [n, D] local queries, L2-normalised
    k: torch.Tensor  # [n, D] local keys, L2-normalised
    q_all: torch.Tensor  # [N, D] queries of every rank (``q`` without a process group)
    k_all: torch.Tensor  # [N, D] keys of every rank
    pos: torch.Tensor  # [n] column of each local row's positive in the gathered batch


def contrast_pairs(q: torch.Tensor, k: torch.Tensor, temperature: float | torch.Tensor,
                   gather: bool) -> Pairs:
    """The shared start of every InfoNCE in cxrcl: float32, L2-normalised, gathered across DDP
    ranks with gradient (when ``gather`` and a process group is up), and the positives' columns.
    Call it with autocast disabled."""
    if torch.is_tensor(temperature):
        temperature = temperature.float()
    q = F.normalize(q.float(), dim=-1)
    k = F.normalize(k.float(), dim=-1)
    n = q.shape[0]
    q_all, k_all = (gather_with_grad(q), gather_with_grad(k)) if gather else (q, k)
    offset = rank() * n if q_all.shape[0] != n else 0
    pos = torch.arange(n, device=q.device) + offset
    return Pairs(temperature, q, k, q_all, k_all, pos)


def per_sample_nce(logits: torch.Tensor, pos: torch.Tensor,
                   soft: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row loss [n] of ``logits`` [n, N]: cross-entropy with the positive column ``pos``, or
    with the soft targets ``soft`` [n, N] (>= 0; zero targets add nothing, also on a removed
    ``-inf`` logit)."""
    if soft is None:
        return F.cross_entropy(logits, pos, reduction="none")
    logp = F.log_softmax(logits, dim=1)
    return -torch.where(soft > 0, soft * logp, torch.zeros_like(logp)).sum(dim=1)


def _info_nce_fp32(q, k, temperature, targets, weights, symmetric, intra_view_negatives, gather):
    if targets is not None:
        targets = targets.float()
    temperature, q, k, q_all, k_all, pos = contrast_pairs(q, k, temperature, gather)
    n = q.shape[0]

    def one_direction(a: torch.Tensor, b_all: torch.Tensor, a_all: torch.Tensor,
                      soft: torch.Tensor | None) -> torch.Tensor:
        logits = a @ b_all.T / temperature
        if intra_view_negatives:
            self_logits = a @ a_all.T / temperature
            self_logits[torch.arange(n, device=a.device), pos] = float("-inf")
            logits = torch.cat([logits, self_logits], dim=1)
        per_sample = per_sample_nce(logits, pos, soft)
        if weights is None:
            return per_sample.mean()
        w = weights.to(per_sample)
        return (w * per_sample).sum() / w.sum().clamp_min(1e-12)

    loss = one_direction(q, k_all, q_all, targets)
    if symmetric:
        loss = 0.5 * (loss + one_direction(k, q_all, k_all, targets))
    return loss


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce` with a fixed or learnable temperature.

    A learnable temperature is stored as log(1/t) (as in CLIP) and clamped to t >= 0.01.
    """

    def __init__(self, temperature: float = 0.1, learnable_temperature: bool = False,
                 symmetric: bool = True, intra_view_negatives: bool = False, gather: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.symmetric, self.intra_view_negatives, self.gather = symmetric, intra_view_negatives, gather
        self.learnable = learnable_temperature
        if learnable_temperature:
            self.log_inv_t = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        else:
            self.register_buffer("log_inv_t", torch.tensor(math.log(1.0 / temperature)), persistent=False)

    @property
    def temperature(self) -> torch.Tensor:
        return 1.0 / self.log_inv_t.clamp(max=math.log(100.0)).exp()

    def forward(self, q: torch.Tensor, k: torch.Tensor, targets: torch.Tensor | None = None,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        return info_nce(q, k, self.temperature, targets=targets, weights=weights,
                        symmetric=self.symmetric, intra_view_negatives=self.intra_view_negatives,
                        gather=self.gather)
