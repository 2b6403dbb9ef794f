"""A patch-local convolutional stem for ViTs (backbone option ``stem=conv``).

Why: on the 64 px phantom no ViT trained from scratch here learns pneumothorax (a rim without
lung markings), not even from labels, while a ResNet-18 does (docs/methods/image_text_results.md). A ViT's
patch embedding is linear in the pixels, so texture (a quadratic quantity, e.g. local
contrast) must be rebuilt by the blocks from few examples. Early convolutions help ViTs
(Xiao et al. 2021, "Early convolutions help transformers see better"), but an ordinary conv
stem lets each token see pixels of its neighbours, which would break MaCo's and MAE's
"the encoder sees only the visible patches".

Our choice: the stem runs on each patch *on its own* (the patches are unfolded into a batch
of p x p images, zero-padded at their own borders), three 3x3 convolutions with GELU, two of
them with stride 2, then a linear map to the embedding width, added to timm's usual linear
patch projection (so ``stem=conv`` can only add to what the linear embedding sees). No batch
or group norm: batch statistics would mix masked and visible patches, and a per-patch norm
would erase the patch's mean brightness (effusion, consolidation). A token therefore depends
on its own p x p pixels only (tested).
"""

from __future__ import annotations

import torch
from torch import nn

from cxrcl.errors import CxrclError


class PatchLocalConvStem(nn.Module):
    """Drop-in for ``vit.patch_embed.proj``: [B, C, H, W] -> [B, D, H/p, W/p], where output
    cell (i, j) is a function of input patch (i, j) only."""

    def __init__(self, linear_proj: nn.Conv2d, width: int = 32):
        super().__init__()
        self.linear = linear_proj
        self.p = int(linear_proj.kernel_size[0])
        if self.p < 4:
            raise CxrclError(f"stem=conv needs patches of at least 4 px, got {self.p}; use e.g. patch_size=8")
        c = linear_proj.in_channels
        self.convs = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.GELU(),
        )
        side = (self.p + 3) // 4  # two stride-2 convolutions with padding 1: ceil(ceil(p / 2) / 2)
        self.to_embed = nn.Linear(4 * width * side * side, linear_proj.out_channels)
        nn.init.zeros_(self.to_embed.weight)  # starts as the plain linear embedding
        nn.init.zeros_(self.to_embed.bias)

    # what timm and the MAE decoder read from a patch projection
    @property
    def kernel_size(self):
        return self.linear.kernel_size

    @property
    def stride(self):
        return self.linear.stride

    @property
    def in_channels(self) -> int:
        return self.linear.in_channels

    @property
    def out_channels(self) -> int:
        return self.linear.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.p
        gh, gw = h // p, w // p
        patches = x.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(b * gh * gw, c, p, p)
        local = self.to_embed(self.convs(patches).flatten(1))  # [B*N, D]
        local = local.view(b, gh, gw, -1).permute(0, 3, 1, 2)
        return self.linear(x) + local
