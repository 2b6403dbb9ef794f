"""SimCLR baseline (Chen et al., 2020): two augmented views, NT-Xent.

Paper: two random augmentations of each image, a shared encoder and projection head, and the
NT-Xent loss where the other 2N-2 views of the batch are negatives. Our choices: CXR-safe
augmentations (:mod:`cxrcl.data.views`: no flips, mild crops/rotations, exposure, blur, noise),
temperature 0.1, the same head as S-PCL, negatives gathered across DDP ranks. Both views go
through the encoder in one batched pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cxrcl.data.views import augment
from cxrcl.losses.info_nce import InfoNCELoss
from cxrcl.methods.base import AugmentedViewsConfig, Method


@dataclass(frozen=True)
class SimCLRConfig(AugmentedViewsConfig):
    """SimCLR uses the shared augmented-views fields and the base temperature (0.1)."""


class SimCLR(Method):
    name = "simclr"
    config_class = SimCLRConfig

    def __init__(self, config: SimCLRConfig, backbone):
        super().__init__(config, backbone)
        self.head = self.make_projection_head()
        self.criterion = InfoNCELoss(config.temperature, config.learnable_temperature,
                                     intra_view_negatives=True)
        self.augment_config = config.augment_config()

    def views(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.cat([augment(images, generator, self.augment_config),
                          augment(images, generator, self.augment_config)])

    def training_step(self, images, generator):
        z1, z2 = self.head(self.backbone(self.views(images, generator))).chunk(2)
        return {"loss": self.criterion(z1, z2), "temperature": self.criterion.temperature.detach()}
