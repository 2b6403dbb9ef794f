"""MoCo v3 baseline (Chen, Xie & He, 2021): momentum encoder + predictor, symmetric loss.

Paper: two augmented views; the online branch is backbone -> projection head -> prediction
head, the key branch an EMA of backbone + projection head (rate from 0.99 to 1 on a cosine
schedule); loss ``2 t * (ctr(q1, k2) + ctr(q2, k1))`` where ``ctr`` is InfoNCE of each query
against the batch's keys (no queue), temperature 0.2. Built from lightly's ``update_momentum``
and ``cosine_schedule`` (:mod:`cxrcl.models.momentum`) and our gathered InfoNCE.

Our choices: the same CXR-safe augmentations, projection head (2 layers, no batch norm by
default, see :mod:`cxrcl.models.heads`) and backbone as SimCLR, so the comparison isolates the
momentum/predictor design; the predictor is a 2-layer MLP of the same builder. The EMA update
runs at the start of each step (it follows the previous optimiser step); the rate is a function
of the step, so a resumed run is exact. Downstream, the online backbone is the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cxrcl.data.views import augment
from cxrcl.losses.info_nce import info_nce
from cxrcl.methods.base import AugmentedViewsConfig, MomentumMethod
from cxrcl.models.heads import projection_head
from cxrcl.models.momentum import MomentumCopy


@dataclass(frozen=True)
class MoCoV3Config(AugmentedViewsConfig):
    temperature: float = 0.2
    momentum: float = 0.99
    momentum_schedule: str = "cosine"


class MoCoV3(MomentumMethod):
    name = "mocov3"
    config_class = MoCoV3Config

    def __init__(self, config: MoCoV3Config, backbone):
        super().__init__(config, backbone)
        c = config
        self.head = self.make_projection_head()
        self.predictor = projection_head(c.proj_dim, c.proj_hidden_dim, c.proj_dim, 2, c.proj_batch_norm)
        self.key_encoder = MomentumCopy(self.backbone, self.head)
        self.augment_config = c.augment_config()

    def training_step(self, images, generator):
        m = self.momentum_now()
        self.key_encoder.update(m)
        x = torch.cat([augment(images, generator, self.augment_config),
                       augment(images, generator, self.augment_config)])
        q1, q2 = self.predictor(self.head(self.backbone(x))).chunk(2)
        with torch.no_grad():
            k1, k2 = self.key_encoder(x).chunk(2)
        t = self.config.temperature
        loss = 2 * t * (info_nce(q1, k2, t, symmetric=False) + info_nce(q2, k1, t, symmetric=False))
        return {"loss": loss, "momentum": torch.tensor(m)}
