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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cxrcl.data.views import AugmentConfig, block_partition, intensity_jitter, random_partition
from cxrcl.losses.info_nce import InfoNCELoss
from cxrcl.methods.base import Method, MethodConfig

JITTER = AugmentConfig()  # brightness +-0.2, contrast x0.7-1.3, gamma 0.7-1.4


@dataclass(frozen=True)
class SPCLConfig(MethodConfig):
    ratios: tuple[float, float] = (0.5, 0.5)
    partition: str = "random"
    block: int = 2
    intensity_jitter: bool = False

    def __post_init__(self):
        if self.partition not in ("random", "block"):
            raise ValueError(f"partition must be 'random' or 'block', got {self.partition!r}")
        if len(self.ratios) != 2 or min(self.ratios) <= 0 or sum(self.ratios) > 1 + 1e-9:
            raise ValueError(f"ratios must be two numbers > 0 summing to <= 1, got {self.ratios}")


class SPCL(Method):
    name = "spcl"
    config_class = SPCLConfig

    def __init__(self, config: SPCLConfig, backbone):
        super().__init__(config, backbone)
        self.head = self.make_projection_head()
        self.criterion = InfoNCELoss(config.temperature, config.learnable_temperature)

    def partition(self, batch: int, generator: torch.Generator, device) -> list[torch.Tensor]:
        """Two disjoint token index sets [B, n_v] per image."""
        c = self.config
        if c.partition == "block":
            return block_partition(batch, self.backbone.grid, c.block, c.ratios, generator, device)
        return random_partition(batch, self.backbone.num_tokens, c.ratios, generator, device)

    def training_step(self, images, generator):
        b = images.shape[0]
        idx1, idx2 = self.partition(b, generator, images.device)
        if self.config.intensity_jitter:
            t1 = self.backbone.embed(intensity_jitter(images, JITTER, generator))
            t2 = self.backbone.embed(intensity_jitter(images, JITTER, generator))
        else:
            t1 = t2 = self.backbone.embed(images)
        if idx1.shape[1] == idx2.shape[1]:  # one batched pass over both views
            z = self.backbone.pool(self.backbone.encode(torch.cat([t1, t2]), torch.cat([idx1, idx2])))
            z1, z2 = self.head(z).chunk(2)
        else:
            z1 = self.head(self.backbone.pool(self.backbone.encode(t1, idx1)))
            z2 = self.head(self.backbone.pool(self.backbone.encode(t2, idx2)))
        loss = self.criterion(z1, z2)
        return {"loss": loss, "temperature": self.criterion.temperature.detach()}
