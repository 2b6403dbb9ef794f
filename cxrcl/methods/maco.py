"""MaCo: masked contrastive chest X-ray foundation model (arXiv 2309.05904; code SZUHvern/MaCo).

Paper and public code:
* MAE-style masking of a fraction of the patches (0.5); the ViT encodes ONLY the visible patches;
  a light decoder reconstructs the masked ones (MSE on per-patch normalised pixels).
* The image embedding is the mean of the encoded VISIBLE patch tokens through an MLP; it is
  contrasted with the report embedding (symmetric InfoNCE, learnable logit scale initialised to
  1/0.03).
* Correlation weighting: ``s = softplus(w . m + b)`` from the binary visible-patch map ``m``
  [N] of each image, with ``w`` and ``b`` initialised to 0 (so ``s`` starts at ln 2); ``s_i``
  scales the logits of image i (its row of image->report, its column of report->image).
* Loss = reconstruction + lambda * contrastive. The paper states lambda = 0.9; the public code
  parses lambda but adds the two terms with weight 1. We use ``lambda_contrastive`` (default
  the paper's 0.9; set 1.0 for the released code's behaviour).
* For evaluation the image is encoded with ALL patches (no masking): :meth:`encode_image` of the
  base class (MaCo's zero-shot code runs its encoder without masking too).
* MaCo is a ViT method; a CNN image tower (e.g. ``--backbone resnet18``) is our extension:
  masked pixels are zeroed SparK-style, so the encoder still sees only the visible patches but
  saves no compute (:mod:`cxrcl.models.masked_encoding`).

Our choices: the image and report projection heads, the text encoder (default MiniLM with its
top 3 layers trained) and the report text are those of :mod:`cxrcl.methods.image_text`, so
CLIP, SISTA and MaCo differ only in their losses (MaCo's image MLP is one linear layer into
BERT's 768-d space; ours is the shared 2-layer head); the decoder is the light one of
:mod:`cxrcl.models.mae_decoder` (128-d x 2 blocks; MaCo: 512-d x 8), shared with ``mae``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cxrcl.methods.image_text import ImageTextConfig, ImageTextMethod, image_text_nce
from cxrcl.methods.mae import MaskingConfig, masked_reconstruction, masking_parts
from cxrcl.models.mae_decoder import visible_map


@dataclass(frozen=True)
class MaCoConfig(ImageTextConfig, MaskingConfig):
    temperature: float = 0.03          # logit scale 1/0.03, learnable (MaCo's code)
    learnable_temperature: bool = True
    lambda_contrastive: float = 0.9    # the paper's lambda; MaCo's released code uses 1.0

    def __post_init__(self):
        self.check_masking()
        if not (self.lambda_contrastive >= 0 and math.isfinite(self.lambda_contrastive)):
            raise ValueError(f"lambda_contrastive must be a number >= 0, got {self.lambda_contrastive}")


class CorrelationWeight(nn.Module):
    """``s = softplus(w . m + b)`` per image from its visible-patch map ``m`` [B, N] -> [B];
    ``w``, ``b`` start at 0, so ``s`` starts at ln 2 for every mask."""

    def __init__(self, num_tokens: int):
        super().__init__()
        self.linear = nn.Linear(num_tokens, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, visible_patch_map: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.linear(visible_patch_map.to(self.linear.weight.dtype))).squeeze(-1)


class MaCo(ImageTextMethod):
    name = "maco"
    config_class = MaCoConfig

    def __init__(self, config: MaCoConfig, backbone):
        super().__init__(config, backbone)
        self.grid, self.decoder = masking_parts(backbone, config, "maco")
        self.correlation = CorrelationWeight(self.grid.num_tokens)

    def contrastive_loss(self, z_image: torch.Tensor, z_text: torch.Tensor, visible: torch.Tensor,
                         valid: torch.Tensor | None = None, exclude: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(correlation-weighted symmetric InfoNCE, the weights s [B]) of a masked batch;
        ``exclude`` removes keys (repeated texts) as in :func:`image_text_nce`."""
        s = self.correlation(visible_map(visible, self.grid.num_tokens))
        loss = image_text_nce(z_image, z_text, self.criterion.temperature, valid=valid, image_weight=s,
                              exclude=exclude)
        return loss, s

    def training_step(self, images, generator):
        texts, valid = self.batch_reports(images.shape[0], images.device)
        rec, enc, visible = masked_reconstruction(self.backbone, self.decoder, self.grid, images, self.config,
                                                  generator)
        z_image = F.normalize(self.image_proj(self.backbone.pool(enc)), dim=-1)  # visible tokens only
        z_text, _ = self.text_features(texts)
        con, s = self.contrastive_loss(z_image, z_text, visible, valid, self.text_exclusions(texts, images.device))
        loss = rec + self.config.lambda_contrastive * con
        return {"loss": loss, "reconstruction": rec.detach(), "contrastive": con.detach(),
                "correlation_weight": s.detach().mean(), "temperature": self.criterion.temperature.detach(),
                "reports": valid.float().mean()}
