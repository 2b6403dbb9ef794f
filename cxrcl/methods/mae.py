"""MAE: masked autoencoder, the reconstruction-only baseline (arXiv 2111.06377).

Paper: mask a random 75% of the patches, encode ONLY the visible ones with the ViT, and let a
light decoder (mask tokens + positions) reconstruct the pixels of the masked patches (MSE on
per-patch normalised pixels). No augmentations beyond cropping, no contrast, no momentum.

Our choices: this is the baseline beside MaCo, so it uses MaCo's masking and decoder exactly
(:mod:`cxrcl.models.mae_decoder`): mask ratio 0.5 by default (MaCo's; ``mask_ratio=0.75`` gives
MAE's), decoder 128-d x 2 blocks (MAE: 512-d x 8), ``norm_pix_loss`` on. The visible tokens are
gathered before the blocks (``backbone.encode(tokens, visible)``), so the encoder's compute
shrinks with the mask ratio. ViT backbones only: a CNN cannot skip masked patches (a clear
error). Downstream the encoder sees all patches (``encoder`` = the backbone, no masking).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cxrcl.methods.base import Method
from cxrcl.models.backbones import Encoded, ViTBackbone
from cxrcl.models.mae_decoder import (
    MAEDecoder,
    build_decoder,
    random_mask,
    reconstruction_loss,
    require_vit,
)


@dataclass(frozen=True)
class MaskingConfig:
    """Fields MAE and MaCo share (frozen, all with defaults, so it mixes into other configs)."""

    mask_ratio: float = 0.5
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True

    def check_masking(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")


@dataclass(frozen=True)
class MAEConfig(MaskingConfig):
    """MAE has no projection head and no temperature: only the masking fields."""

    def __post_init__(self):
        self.check_masking()


def masked_reconstruction(backbone: ViTBackbone, decoder: MAEDecoder, images: torch.Tensor,
                          config: MaskingConfig, generator: torch.Generator
                          ) -> tuple[torch.Tensor, Encoded, torch.Tensor]:
    """One masked pass: (reconstruction loss, the encoder's output on the visible tokens, the
    visible indices [B, K]). The blocks see only the K visible tokens (+ the class token)."""
    tokens = backbone.embed(images)
    visible, masked = random_mask(images.shape[0], backbone.num_tokens, config.mask_ratio, generator,
                                  images.device)
    enc = backbone.encode(tokens, visible)
    pred = decoder(enc.patch_tokens, visible, masked)
    loss = reconstruction_loss(pred, images, masked, backbone.patch_size, config.norm_pix_loss)
    return loss, enc, visible


class MAE(Method):
    name = "mae"
    config_class = MAEConfig

    def __init__(self, config: MAEConfig, backbone):
        require_vit(backbone, "mae")
        super().__init__(config, backbone)
        self.decoder = build_decoder(backbone, config.decoder_dim, config.decoder_depth, config.decoder_heads)

    def training_step(self, images, generator):
        loss, _, _ = masked_reconstruction(self.backbone, self.decoder, images, self.config, generator)
        return {"loss": loss, "reconstruction": loss.detach()}
