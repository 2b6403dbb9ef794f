"""Encode only the visible patches of a masked image, with a ViT or a CNN (``mae``, ``maco``).

ViT (MAE and MaCo as published): the mask is over the ViT's own patches and only the visible
tokens are gathered into the blocks, so the encoder's compute shrinks with the mask ratio.

CNN (our extension, after SparK, arXiv 2301.03580, and ConvNeXt V2's FCMAE, arXiv 2301.00808,
which pre-train CNNs by masked image modelling): the mask is over square pixel patches of
``cnn_mask_patch`` px (a config field; the default 8 gives a 64 px image the 64 tokens of
ViT-Tiny/8), the masked pixels are set to 0 before the stem, and the network runs densely.
Every output therefore depends on the visible pixels only (tested), which is the property
MaCo needs; the compute does not shrink (sparse convolutions would be needed, as SparK uses).
The pooled feature weights each output cell by the visible share of its pixels; the decoder
gets, for each visible patch, the final feature map cell it lies in (nearest upsampling) and
tells patches apart by its position embeddings. SparK instead decodes a feature pyramid; one
map is our simpler choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cxrcl.errors import CxrclError
from cxrcl.models.backbones import CNNBackbone, Encoded, TokenBackbone, ViTBackbone, gather_tokens
from cxrcl.models.mae_decoder import visible_map


@dataclass(frozen=True)
class MaskGrid:
    """The square grid of patches a mask is drawn over."""

    side: int        # patches per row
    patch_size: int  # px

    @property
    def num_tokens(self) -> int:
        return self.side * self.side


def mask_grid(backbone: TokenBackbone, cnn_mask_patch: int, method: str) -> MaskGrid:
    """A ViT's own patches, or ``cnn_mask_patch`` px squares of a CNN's training image size."""
    if isinstance(backbone, ViTBackbone):
        if backbone.grid[0] != backbone.grid[1]:
            raise CxrclError(f"{method} needs a square patch grid, got {backbone.grid}")
        return MaskGrid(backbone.grid[0], backbone.patch_size)
    if isinstance(backbone, CNNBackbone):
        size = backbone.image_size
        if size % cnn_mask_patch:  # the config has already refused values below 1
            raise CxrclError(f"{method}: cnn_mask_patch={cnn_mask_patch} must divide the image size {size}; "
                             f"e.g. {method}:cnn_mask_patch={8 if size % 8 == 0 else size}")
        return MaskGrid(size // cnn_mask_patch, cnn_mask_patch)
    raise CxrclError(f"{method} supports ViT and CNN backbones, got {backbone.name}")


def encode_visible(backbone: TokenBackbone, images: torch.Tensor, visible: torch.Tensor,
                   grid: MaskGrid) -> tuple[Encoded, torch.Tensor]:
    """(the encoder's output for ``backbone.pool``, one feature [B, K, D] per visible patch in
    the order of ``visible`` for the decoder). Masked pixels never reach the encoder."""
    if isinstance(backbone, ViTBackbone):
        enc = backbone.encode(backbone.embed(images), visible)
        return enc, enc.patch_tokens
    b, g = images.shape[0], grid.side
    if images.shape[-1] != g * grid.patch_size or images.shape[-2] != images.shape[-1]:
        raise CxrclError(f"masked encoding expects {g * grid.patch_size} px square images, "
                         f"got {tuple(images.shape[-2:])}")
    seen = visible_map(visible, grid.num_tokens).view(b, 1, g, g).to(images.dtype)
    pixels = F.interpolate(seen, scale_factor=grid.patch_size, mode="nearest")
    fmap = backbone.final_norm(backbone.stages(backbone.stem(images * pixels)))
    weight = F.adaptive_avg_pool2d(seen, fmap.shape[-2:]).flatten(1)  # visible share of each cell
    enc = Encoded(fmap.flatten(2).transpose(1, 2), num_prefix=0, weight=weight)
    per_patch = F.interpolate(fmap, size=(g, g), mode="nearest").flatten(2).transpose(1, 2)
    return enc, gather_tokens(per_patch, visible)
