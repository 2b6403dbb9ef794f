"""MAE-style random masking, a light decoder, and the masked-patch reconstruction loss.

Used by ``mae`` (reconstruction only) and ``maco`` (reconstruction + image-report contrast).

Paper (MAE, arXiv 2111.06377; MaCo, arXiv 2309.05904): the encoder sees only the visible
patches; a light transformer decoder gets the encoded visible tokens back in place, a shared
learned mask token at every masked position, fixed 2-D sin-cos position embeddings, and
predicts the pixels of each patch; the loss is the MSE on the MASKED patches only, with each
target patch normalised by its own mean and variance (``norm_pix_loss``, MAE's best setting and
what METHODS.md asks for MaCo).

Our choices: the decoder is lightly's ``MaskedVisionTransformerDecoderTIMM`` (timm blocks, mask
token, sin-cos positions) with an input projection and a pixel head around it; it decodes the
patch tokens only (an encoder class token is not passed on: nothing reads it back); defaults are
smaller than MAE's 512-d x 8 blocks (128-d x 2 blocks, 4 heads) to suit ViT-Tiny on CPU; the
mask is drawn from the step's generator (lightly's ``random_token_mask`` uses the global RNG and
treats token 0 as a class token, which would break exact resume here).
"""

from __future__ import annotations

import torch
from lightly.models import utils as lightly_utils
from lightly.models.modules import MaskedVisionTransformerDecoderTIMM
from torch import nn

from cxrcl.models.backbones import TokenBackbone


def random_mask(batch: int, num_tokens: int, mask_ratio: float, generator: torch.Generator,
                device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(visible, masked) token indices [B, K], [B, N - K]; per sample a uniform random split
    with ``round(mask_ratio * N)`` masked tokens (at least one of each)."""
    n_masked = min(num_tokens - 1, max(1, round(mask_ratio * num_tokens)))
    perm = torch.rand(batch, num_tokens, generator=generator, device=device).argsort(dim=1)
    return perm[:, :num_tokens - n_masked], perm[:, num_tokens - n_masked:]


def visible_map(visible: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Binary map [B, N]: 1 where the patch was visible to the encoder (MaCo's ``m``)."""
    m = torch.zeros(visible.shape[0], num_tokens, device=visible.device)
    return m.scatter_(1, visible, 1.0)


class MAEDecoder(nn.Module):
    """Encoded visible tokens [B, K, D_enc] -> predicted pixels [B, M, p*p*C] of the masked patches."""

    def __init__(self, num_patches: int, encoder_dim: int, patch_size: int, in_chans: int = 1,
                 dim: int = 128, depth: int = 2, heads: int = 4, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"decoder_dim {dim} must be a multiple of decoder_heads {heads}")
        if depth < 1:
            raise ValueError(f"decoder_depth must be >= 1, got {depth}")
        self.num_patches, self.patch_size, self.in_chans = num_patches, patch_size, in_chans
        self.embed = nn.Linear(encoder_dim, dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=num_patches, embed_dim=dim, depth=depth, num_heads=heads,
            num_prefix_tokens=0, mlp_ratio=mlp_ratio)
        self.pred = nn.Linear(dim, patch_size * patch_size * in_chans)

    def no_weight_decay(self) -> set[str]:
        return {"decoder.mask_token"}

    def forward(self, encoded: torch.Tensor, visible: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        b = encoded.shape[0]
        x = self.embed(encoded)
        full = lightly_utils.repeat_token(self.decoder.mask_token.to(x.dtype), (b, self.num_patches))
        full = lightly_utils.set_at_index(full, visible, x)  # visible tokens back in place
        x = self.decoder.decode(self.decoder.add_pos_embed(full))
        return self.pred(lightly_utils.get_at_index(x, masked))


def patch_targets(images: torch.Tensor, masked: torch.Tensor, patch_size: int,
                  norm_pix: bool = True) -> torch.Tensor:
    """Pixels [B, M, p*p*C] of the masked patches (token order = timm's row-major patch order),
    each normalised by its own mean and variance when ``norm_pix``."""
    target = lightly_utils.get_at_index(lightly_utils.patchify(images, patch_size), masked)
    return lightly_utils.normalize_mean_var(target, dim=-1) if norm_pix else target


def reconstruction_loss(pred: torch.Tensor, images: torch.Tensor, masked: torch.Tensor,
                        patch_size: int, norm_pix: bool = True) -> torch.Tensor:
    """MSE over the masked patches (MAE's loss), computed in float32."""
    with torch.autocast(device_type=pred.device.type, enabled=False):
        target = patch_targets(images.float(), masked, patch_size, norm_pix)
        return ((pred.float() - target) ** 2).mean()


def build_decoder(backbone: TokenBackbone, num_patches: int, patch_size: int, dim: int, depth: int,
                  heads: int, in_chans: int = 1) -> MAEDecoder:
    """The decoder for ``num_patches`` patches of ``patch_size`` px (cxrcl's input is one grey
    channel) over the backbone's feature width."""
    return MAEDecoder(num_patches, backbone.dim, patch_size, in_chans, dim, depth, heads)
