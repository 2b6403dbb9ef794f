"""What every pre-training method is: a backbone + a head + a loss + a view maker.

A method exposes ``training_step(images, generator) -> dict`` whose ``"loss"`` is optimised;
other entries are logged. ``images`` is a normalised batch [B, 1, S, S] from
:func:`cxrcl.data.normalize.to_model_input`; every random draw of the step comes from
``generator`` so a resumed run is exact. Methods know nothing of the CLI, files or DDP.

The loop tells a method where it is before each step (:meth:`Method.set_progress`: ``self.step``
and ``self.total_steps``), so schedules (sparsity ramps, self-paced thresholds, momentum and
teacher-temperature schedules) are pure functions of the step and resume exactly; it calls
:meth:`Method.after_optimizer_step` after each optimiser step (momentum encoders update there).
State that must survive a resume (queues, centres) lives in registered buffers, which the
checkpoint saves with the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from cxrcl.data.views import AugmentConfig
from cxrcl.models.backbones import TokenBackbone
from cxrcl.models.heads import projection_head
from cxrcl.models.momentum import momentum_at


@dataclass(frozen=True)
class MethodConfig:
    """Fields every method shares; each method's config subclasses this."""

    proj_hidden_dim: int = 512
    proj_dim: int = 128
    proj_layers: int = 2
    proj_batch_norm: bool = False
    temperature: float = 0.1
    learnable_temperature: bool = False


@dataclass(frozen=True)
class AugmentedViewsConfig(MethodConfig):
    """Fields of methods whose views are CXR-safe augmentations (SimCLR's recipe, cxrcl.data.views):
    a random crop of at least ``crop_area_min`` of the image, a small rotation, blur with
    probability ``blur_p``."""

    crop_area_min: float = 0.5
    rotation_deg: float = 10.0
    blur_p: float = 0.5

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(crop_area=(self.crop_area_min, 1.0), rotation_deg=self.rotation_deg,
                             blur_p=self.blur_p)


class Method(nn.Module):
    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, config: MethodConfig, backbone: TokenBackbone):
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.step, self.total_steps = 0, 1
        self.batch_rows, self.dataset = None, None

    def set_progress(self, step: int, total_steps: int) -> None:
        """Called by the loop before ``training_step``: 0-based step of ``total_steps``."""
        self.step, self.total_steps = int(step), max(1, int(total_steps))

    @property
    def progress(self) -> float:
        """Fraction of training done before this step, in [0, 1)."""
        return self.step / self.total_steps

    def after_optimizer_step(self) -> None:
        """Called by the loop after each optimiser step (e.g. a momentum-encoder EMA update)."""

    def check_data(self, dataset) -> None:
        """Called by ``pretrain`` before anything is written: raise a CxrclError naming the fix
        if this method cannot train on ``dataset`` (e.g. CoMCL's regions=mask without masks).
        Most methods train on any prepared data set."""

    def set_batch_rows(self, rows, dataset) -> None:
        """Called by the loop before ``training_step`` with the data set rows of the batch (in
        batch order) and the :class:`~cxrcl.data.prepared.PreparedDataset`, for methods whose
        views need per-image annotations (CoMCL's lesion masks); others ignore it."""
        self.batch_rows, self.dataset = rows, dataset

    def training_step(self, images: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def make_projection_head(self) -> nn.Module:
        """The projection head the config describes, on top of the backbone's features."""
        c = self.config
        return projection_head(self.backbone.dim, c.proj_hidden_dim, c.proj_dim, c.proj_layers,
                               c.proj_batch_norm)

    @property
    def encoder(self) -> TokenBackbone:
        """The network a downstream task uses (``pool(encode(embed(x)))``)."""
        return self.backbone


class MomentumMethod(Method):
    """A method with a momentum (EMA) encoder (MoCo v3, DINO, CoMCL): its config has
    ``momentum`` (the start rate) and ``momentum_schedule``; the rate rises to 1 over the run."""

    def momentum_now(self) -> float:
        """The EMA rate of this step, a pure function of the step (so ``--resume`` is exact)."""
        c = self.config
        return momentum_at(self.step, self.total_steps, c.momentum, 1.0, c.momentum_schedule)
