"""S-PCL: semantic-partitioned contrastive learning (arXiv 2603.07113).

Paper: the patch tokens of ONE image are split at random into two non-overlapping subsets;
each subset is a view; the encoder makes the two partial views agree with InfoNCE over the
batch. No hand-crafted augmentations, no decoder, no momentum encoder. Two half-length passes
cost about one full pass (attention even less), against two full passes for SimCLR.

Our choices (the paper's code is not public): view ratios 0.5/0.5 (``ratios``; e.g. 0.4,0.4
drops 20% of tokens), ``partition`` = ``random`` (uniform over tokens) or ``block`` (groups of
``block`` x ``block`` cells), mean-pooled kept tokens -> a 2-layer projection head -> symmetric
InfoNCE with temperature 0.1 (fixed by default, ``learnable_temperature`` to learn it). When the
two views have the same size they are encoded in ONE batched pass. On a CNN the dropped cells
are masked instead (see :class:`cxrcl.models.backbones.CNNBackbone`).

``intensity_jitter`` (our addition, off by default to stay with the paper): each view's tokens
are embedded from its own brightness/contrast/gamma-jittered copy of the image, so the two
halves cannot agree through global exposure alone (a shortcut that partitions of one image
otherwise share). The views stay disjoint token sets; the cost is one extra patch embedding.

``partition=saliency`` (S-PCL x SparseContrast, our design; no paper has it): a compact
saliency predictor (:mod:`cxrcl.models.saliency`) scores the embedded patch tokens, the top
``saliency_keep`` of them are kept (Gumbel top-k during training) and only those are split at
random into the two views by ``ratios``. It scores the embeddings, before any block, so each
view is still encoded from its own tokens only. Trained jointly: straight-through score
scaling + ``sparsity_weight`` x the keep-ratio term; the salient fraction is 1 for the first
``dense_fraction`` of the steps, then ramps linearly to ``saliency_keep`` over
``ramp_fraction``. The downstream encoder stays S-PCL's (all tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cxrcl.data.views import AugmentConfig, block_partition, intensity_jitter, random_partition
from cxrcl.losses.info_nce import InfoNCELoss
from cxrcl.methods.base import Method, MethodConfig
from cxrcl.models.saliency import (
    SaliencyPredictor,
    keep_count,
    scheduled_keep_ratio,
    select_top_k,
    sparsity_loss,
    straight_through_factor,
)

JITTER = AugmentConfig()  # brightness +-0.2, contrast x0.7-1.3, gamma 0.7-1.4


@dataclass(frozen=True)
class SPCLConfig(MethodConfig):
    ratios: tuple[float, float] = (0.5, 0.5)
    partition: str = "random"
    block: int = 2
    intensity_jitter: bool = False
    saliency_keep: float = 0.5       # partition=saliency: fraction of tokens the views share out
    sparsity_weight: float = 2.0
    saliency_noise: float = 1.0
    dense_fraction: float = 0.1
    ramp_fraction: float = 0.3

    def __post_init__(self):
        if self.partition not in ("random", "block", "saliency"):
            raise ValueError(f"partition must be 'random', 'block' or 'saliency', got {self.partition!r}")
        if not 0 < self.saliency_keep <= 1:
            raise ValueError(f"saliency_keep must be in (0, 1], got {self.saliency_keep}")
        if len(self.ratios) != 2 or min(self.ratios) <= 0 or sum(self.ratios) > 1 + 1e-9:
            raise ValueError(f"ratios must be two numbers > 0 summing to <= 1, got {self.ratios}")


class SPCL(Method):
    name = "spcl"
    config_class = SPCLConfig

    def __init__(self, config: SPCLConfig, backbone):
        super().__init__(config, backbone)
        h, w = backbone.grid
        if config.partition == "block" and (h % config.block or w % config.block):
            raise ValueError(f"block={config.block} does not divide the {h}x{w} token grid of "
                             f"{backbone.name}; choose a block size that divides {h} and {w}")
        self.head = self.make_projection_head()
        self.criterion = InfoNCELoss(config.temperature, config.learnable_temperature)
        if config.partition == "saliency":
            dim = getattr(backbone, "token_dim", backbone.dim)
            self.predictor = SaliencyPredictor(dim)
            self.step, self.total_steps = 1, 1  # outside the loop: the end of the schedule

    def partition(self, batch: int, generator: torch.Generator, device) -> list[torch.Tensor]:
        """Two disjoint token index sets [B, n_v] per image."""
        c = self.config
        if c.partition == "block":
            return block_partition(batch, self.backbone.grid, c.block, c.ratios, generator, device)
        return random_partition(batch, self.backbone.num_tokens, c.ratios, generator, device)

    def salient_partition(self, tokens: torch.Tensor, generator: torch.Generator):
        """partition=saliency: (view indices, logits, salient fraction) from the embeddings."""
        c = self.config
        logits = self.predictor(tokens)
        rho = scheduled_keep_ratio(self.progress, c.saliency_keep, c.dense_fraction, c.ramp_fraction)
        salient = select_top_k(logits, keep_count(tokens.shape[1], rho), generator, c.saliency_noise)
        parts = random_partition(tokens.shape[0], salient.shape[1], c.ratios, generator, tokens.device)
        return [torch.gather(salient, 1, p) for p in parts], logits, rho

    def training_step(self, images, generator):
        b = images.shape[0]
        if self.config.partition != "saliency":
            idx1, idx2 = self.partition(b, generator, images.device)
        if self.config.intensity_jitter:
            t1 = self.backbone.embed(intensity_jitter(images, JITTER, generator))
            t2 = self.backbone.embed(intensity_jitter(images, JITTER, generator))
        else:
            t1 = t2 = self.backbone.embed(images)
        extra = {}
        if self.config.partition == "saliency":
            (idx1, idx2), logits, rho = self.salient_partition(t1, generator)
            factor = straight_through_factor(logits, None).to(t1.dtype)  # 1 in value
            t1, t2 = t1 * factor, t2 * factor
            extra = {"sparsity": sparsity_loss(logits, self.config.saliency_keep),
                     "keep_ratio": torch.tensor(rho)}
        if idx1.shape[1] == idx2.shape[1]:  # one batched pass over both views
            z = self.backbone.pool(self.backbone.encode(torch.cat([t1, t2]), torch.cat([idx1, idx2])))
            z1, z2 = self.head(z).chunk(2)
        else:
            z1 = self.head(self.backbone.pool(self.backbone.encode(t1, idx1)))
            z2 = self.head(self.backbone.pool(self.backbone.encode(t2, idx2)))
        loss = self.criterion(z1, z2)
        logs = {"temperature": self.criterion.temperature.detach()}
        if extra:
            logs.update(contrastive=loss.detach(), sparsity=extra["sparsity"].detach(),
                        keep_ratio=extra["keep_ratio"])
            loss = loss + self.config.sparsity_weight * extra["sparsity"]
        return {"loss": loss, **logs}
