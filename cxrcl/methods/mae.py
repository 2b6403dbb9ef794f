"""MAE: masked autoencoder, the reconstruction-only baseline (arXiv 2111.06377).

Paper: mask a random 75% of the patches, encode ONLY the visible ones with the ViT, and let a
light decoder (mask tokens + positions) reconstruct the pixels of the masked patches (MSE on
per-patch normalised pixels). No augmentations beyond cropping, no contrast, no momentum.

Our choices: this is the baseline beside MaCo, so it uses MaCo's masking and decoder exactly
(:mod:`cxrcl.models.mae_decoder`): mask ratio 0.5 by default (MaCo's; ``mask_ratio=0.75`` gives
MAE's), decoder 128-d x 2 blocks (MAE: 512-d x 8), ``norm_pix_loss`` on. With a ViT the visible
tokens are gathered before the blocks (``backbone.encode(tokens, visible)``), so the encoder's
compute shrinks with the mask ratio. A CNN (our extension, SparK-style) gets the masked pixels
set to 0 and runs densely: it sees only the visible pixels but saves no compute
(:mod:`cxrcl.models.masked_encoding`). Downstream the encoder sees all patches (``encoder`` =
the backbone, no masking).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cxrcl.methods.base import Method
from cxrcl.models.backbones import Encoded, TokenBackbone
from cxrcl.models.mae_decoder import MAEDecoder, build_decoder, random_mask, reconstruction_loss
from cxrcl.models.masked_encoding import MaskGrid, encode_visible, mask_grid


@dataclass(frozen=True)
class MaskingConfig:
    """Fields MAE and MaCo share (frozen, all with defaults, so it mixes into other configs)."""

    mask_ratio: float = 0.5
    cnn_mask_patch: int = 8  # px of a mask patch on a CNN (a ViT masks its own patches)
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True

    def check_masking(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.cnn_mask_patch < 1:
            raise ValueError(f"cnn_mask_patch must be a positive number of pixels, got {self.cnn_mask_patch}")


@dataclass(frozen=True)
class MAEConfig(MaskingConfig):
    """MAE has no projection head and no temperature: only the masking fields."""

    def __post_init__(self):
        self.check_masking()


def masking_parts(backbone: TokenBackbone, config: MaskingConfig, method: str) -> tuple[MaskGrid, MAEDecoder]:
    """The mask grid of ``backbone`` and a decoder for it (MAE and MaCo build both alike)."""
    grid = mask_grid(backbone, config.cnn_mask_patch, method)
    decoder = build_decoder(backbone, grid.num_tokens, grid.patch_size, config.decoder_dim,
                            config.decoder_depth, config.decoder_heads)
    return grid, decoder


def masked_reconstruction(backbone: TokenBackbone, decoder: MAEDecoder, grid: MaskGrid, images: torch.Tensor,
                          config: MaskingConfig, generator: torch.Generator
                          ) -> tuple[torch.Tensor, Encoded, torch.Tensor]:
    """One masked pass: (reconstruction loss, the encoder's output on the visible patches, the
    visible indices [B, K]). A ViT's blocks see only the K visible tokens (+ the class token)."""
    visible, masked = random_mask(images.shape[0], grid.num_tokens, config.mask_ratio, generator,
                                  images.device)
    enc, visible_features = encode_visible(backbone, images, visible, grid)
    pred = decoder(visible_features, visible, masked)
    loss = reconstruction_loss(pred, images, masked, grid.patch_size, config.norm_pix_loss)
    return loss, enc, visible


class MAE(Method):
    name = "mae"
    config_class = MAEConfig

    def __init__(self, config: MAEConfig, backbone):
        super().__init__(config, backbone)
        self.grid, self.decoder = masking_parts(backbone, config, "mae")

    def training_step(self, images, generator):
        loss, _, _ = masked_reconstruction(self.backbone, self.decoder, self.grid, images, self.config, generator)
        return {"loss": loss, "reconstruction": loss.detach()}
