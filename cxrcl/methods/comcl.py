"""CoMCL: clinical-oriented multi-level contrast across image quality (arXiv 2404.04887).

Paper: per sample four views -- a lesion patch, a low-quality copy of it, a healthy patch and a
low-quality copy of that; positives are the same lesion across quality levels; negatives are
healthy patches held in a MoCo queue (momentum key encoder), so other lesions are never pushed
away; dynamic hard-sample mining by self-paced learning. The public code (IntelliDAL/Image,
folder CoMCL) is MoCo v2 (ResNet-50, queue 7,200, momentum 0.999, temperature 0.07) with the
healthy-patch queue behind a flag; the four-view construction and the self-paced weighting are
NOT in it, so both are our design here:

* regions: the paper's lesion detector is replaced by a pluggable region source
  (:mod:`cxrcl.data.regions`: ``mask`` = phantom ground truth or a data set's masks, ``box`` =
  the phantom's lesion boxes, ``saliency`` = an earlier run's token distinctiveness, ``none`` =
  uniform placements, for timing only); patches cover ``patch_fraction`` of the image side and
  are resampled to the input size;
* quality: the low-quality copies come from :func:`cxrcl.data.degrade.degrade_batch`, the
  definition ``cxrcl eval --degrade-test`` uses, at a level drawn per view from
  ``degrade_levels``; before that both lesion views get an independent mild crop/rotation/
  exposure augmentation (``augment``);
* loss: for the lesion pair (clean query vs degraded key, and the reverse) and, with
  ``image_level``, the same for the whole image and its degraded copy: cross-entropy of the
  positive key against the queue of healthy keys (temperature 0.07); per-sample losses are
  weighted by self-paced weights (``self_paced`` = hard, linear or none; threshold
  ``sp_lambda`` start, end in units of the chance loss ln(1 + queue size), linear in the
  step); after the loss, the key encoder's healthy-patch keys (clean and degraded) are pushed
  into the queue -- nothing else ever is;
* the key encoder is an EMA of the online backbone + head, updated at the start of every step
  (as in MoCo's code: it follows the previous optimiser step), rate ``momentum`` (constant by
  default, as in MoCo v2; ``momentum_schedule=cosine`` ramps it to 1).

The queue is a persistent buffer and every schedule is a function of the step, so
``--resume`` continues exactly. Downstream, the online backbone is the encoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cxrcl.data.degrade import degrade_batch
from cxrcl.data.regions import SOURCES, crop_patches, place_patches, region_source
from cxrcl.data.views import AugmentConfig, augment
from cxrcl.errors import CxrclError
from cxrcl.losses.self_paced import FORMS, self_paced_lambda, self_paced_weights, weighted_mean
from cxrcl.methods.base import MethodConfig, MomentumMethod
from cxrcl.models.momentum import KeyQueue, MomentumCopy

PATCH_AUGMENT = AugmentConfig(crop_area=(0.6, 1.0), blur_p=0.0, noise_std=(0.0, 0.0))


@dataclass(frozen=True)
class CoMCLConfig(MethodConfig):
    temperature: float = 0.07
    queue_size: int = 7200
    momentum: float = 0.999
    momentum_schedule: str = "constant"
    regions: str = "mask"
    region_run: str = ""
    region_quantile: float = 0.85
    patch_fraction: float = 0.5
    degrade_levels: tuple[int, int] = (1, 3)
    single_component_p: float = 0.5
    augment: bool = True
    image_level: bool = True
    self_paced: str = "linear"
    sp_lambda: tuple[float, float] = (1.0, 2.0)

    def __post_init__(self):
        if self.regions not in (*SOURCES, "none"):
            raise ValueError(f"regions must be one of {', '.join((*SOURCES, 'none'))}, got {self.regions!r}")
        if self.self_paced not in (*FORMS, "none"):
            raise ValueError(f"self_paced must be hard, linear or none, got {self.self_paced!r}")
        lo, hi = self.degrade_levels
        if not 1 <= lo <= hi <= 3:
            raise ValueError(f"degrade_levels must be two levels 1 <= lo <= hi <= 3, got {self.degrade_levels}")
        if not 0 < self.patch_fraction <= 1:
            raise ValueError(f"patch_fraction must be in (0, 1], got {self.patch_fraction}")
        start, end = self.sp_lambda
        if start <= 0 or (math.isinf(end) and not math.isinf(start)):
            raise ValueError(f"sp_lambda must be start > 0, end (both inf for no weighting), got {self.sp_lambda}")
        if self.queue_size < 1 or not 0 <= self.momentum <= 1:
            raise ValueError("queue_size must be >= 1 and momentum in [0, 1]")


class CoMCL(MomentumMethod):
    name = "comcl"
    config_class = CoMCLConfig

    def __init__(self, config: CoMCLConfig, backbone):
        super().__init__(config, backbone)
        self.head = self.make_projection_head()
        self.key_encoder = MomentumCopy(self.backbone, self.head)
        self.queue = KeyQueue(config.queue_size, config.proj_dim)
        self._regions = None  # built on first use (it may need the data set or another run)

    # ------------------------------------------------------------------ schedules (pure in step)
    def lambda_now(self) -> float:
        """The self-paced threshold of this step, in loss units."""
        c = self.config
        if c.self_paced == "none":
            return math.inf
        return self_paced_lambda(self.progress, *c.sp_lambda) * math.log(1 + c.queue_size)

    def check_data(self, dataset) -> None:
        """Build the region source now, so a data set without masks (or a missing region_run)
        is refused before the run folder is made."""
        c = self.config
        if c.regions != "none" and self._regions is None:
            self._regions = region_source(c.regions, dataset, c.region_run, c.region_quantile)

    # ------------------------------------------------------------------ views
    def region_maps(self, images: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.regions == "none":
            return torch.zeros(images.shape[0], *images.shape[-2:], device=images.device)
        if self._regions is None:  # built outside pretrain (which calls check_data first)
            self.check_data(self.dataset)
        return self._regions.maps(images, self.batch_rows)

    def views(self, images: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The four CoMCL views (and the whole image with its degraded copy)."""
        c = self.config
        b = images.shape[0]
        lesion_tl, healthy_tl, cells = place_patches(self.region_maps(images), c.patch_fraction, generator)
        lesion = crop_patches(images, lesion_tl, cells)
        healthy = crop_patches(images, healthy_tl, cells)
        lesion_a = lesion
        if c.augment:
            lesion_a, lesion = augment(lesion, generator, PATCH_AUGMENT), augment(lesion, generator, PATCH_AUGMENT)
        clean = [lesion, healthy] + ([images] if c.image_level else [])
        src = torch.cat([lesion_a, healthy] + ([images] if c.image_level else []))
        levels = torch.randint(c.degrade_levels[0], c.degrade_levels[1] + 1, (src.shape[0],),
                               generator=generator, device=generator.device)
        low = degrade_batch(src, levels, generator, c.single_component_p).split(b)
        out = {"lesion": clean[0], "lesion_low": low[0], "healthy": clean[1], "healthy_low": low[1],
               "lesion_cells": lesion_tl, "healthy_cells": healthy_tl,
               "patch_cells": torch.tensor(cells)}
        if c.image_level:
            out.update(image=images, image_low=low[2])
        return out

    # ------------------------------------------------------------------ loss
    def per_sample_loss(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """CE of each query's positive key against the queue (MoCo's loss, no reduction)."""
        q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
        pos = (q * k).sum(1, keepdim=True)
        neg = q @ self.queue.keys.clone().T.to(q.dtype)  # a copy: the queue is updated in place
        logits = torch.cat([pos, neg], 1) / self.config.temperature
        return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device),
                               reduction="none")

    def training_step(self, images, generator):
        if images.shape[0] > self.config.queue_size:
            raise CxrclError(f"comcl: queue_size={self.config.queue_size} is smaller than the batch "
                             f"({images.shape[0]}): raise queue_size")
        self.key_encoder.update(self.momentum_now())
        v = self.views(images, generator)
        b = images.shape[0]
        pairs = [("lesion", "lesion_low")] + ([("image", "image_low")] if self.config.image_level else [])
        online_in = torch.cat([v[name] for pair in pairs for name in pair])
        q = self.head(self.backbone(online_in)).split(b)
        with torch.no_grad():
            k = self.key_encoder(torch.cat([online_in, v["healthy"], v["healthy_low"]])).split(b)
        losses = []
        for i in range(len(pairs)):  # symmetric: clean query vs low-quality key, and the reverse
            losses += [self.per_sample_loss(q[2 * i], k[2 * i + 1]),
                       self.per_sample_loss(q[2 * i + 1], k[2 * i])]
        per_sample = torch.stack(losses).mean(0)
        lam = self.lambda_now()
        weights = self_paced_weights(per_sample, lam, self.config.self_paced if math.isfinite(lam) else "hard")
        loss = weighted_mean(per_sample, weights)
        if self.training:
            self.queue.push(torch.cat([k[-2], k[-1]]))  # healthy keys only
        return {"loss": loss, "unweighted_loss": per_sample.mean().detach(),
                "sp_admitted": (weights > 0).float().mean(), "sp_lambda": torch.tensor(lam),
                "momentum": torch.tensor(self.momentum_now())}
