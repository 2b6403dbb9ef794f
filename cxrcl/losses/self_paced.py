"""Self-paced sample weights (Kumar et al., 2010) for CoMCL's dynamic hard-sample mining.

Self-paced learning minimises ``sum_i v_i l_i - lambda * sum_i v_i`` alternately over the model
and the weights v; with the model fixed the optimal weights have a closed form:

* hard:   ``v_i = 1[l_i < lambda]``
* linear: ``v_i = max(0, 1 - l_i / lambda)``

``lambda`` grows during training so harder (higher-loss) samples enter later. The CoMCL paper
describes this; the released code does not contain it, so the schedule is ours: ``lambda_t``
moves linearly from ``start`` to ``end`` over the run, in units of the chance-level loss
``ln(1 + K)`` of a query against one positive and K negatives (so one setting means the same
for any queue size). ``lambda = inf`` gives every weight 1: the loss is then exactly the plain
(unweighted) InfoNCE. Weights are computed from detached losses (they are not differentiated).
"""

from __future__ import annotations

import math

import torch

FORMS = ("hard", "linear")


def self_paced_lambda(progress: float, start: float, end: float) -> float:
    """Threshold at ``progress`` in [0, 1]: linear from ``start`` to ``end`` (inf stays inf)."""
    if math.isinf(start):
        return math.inf
    p = min(max(float(progress), 0.0), 1.0)
    return start + (end - start) * p


def self_paced_weights(losses: torch.Tensor, lam: float, form: str = "hard") -> torch.Tensor:
    """Per-sample weights v [N] for per-sample losses [N] at threshold ``lam``."""
    if form not in FORMS:
        raise ValueError(f"self-paced form must be one of {FORMS}, got {form!r}")
    losses = losses.detach()
    if math.isinf(lam):
        return torch.ones_like(losses)
    if lam <= 0:
        raise ValueError(f"self-paced lambda must be > 0, got {lam}")
    if form == "hard":
        return (losses < lam).to(losses.dtype)
    return (1 - losses / lam).clamp_min(0)


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(v * l) / sum(v)`` (0 when every weight is 0): the same reduction as the weighted
    form of :func:`cxrcl.losses.info_nce.info_nce`, so all-ones weights give the plain mean."""
    return (weights * losses).sum() / weights.sum().clamp_min(1e-12)
