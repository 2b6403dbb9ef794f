"""CLIP / ConVIRT baseline: symmetric image-report InfoNCE with a learnable logit scale.

Papers: ConVIRT (Zhang et al., 2020) contrasts a chest X-ray with its report in both directions
(image->text and text->image InfoNCE, averaged; lambda = 0.75 weighting, temperature 0.1, a
BERT text encoder with its lower half frozen, 2-layer projection heads); CLIP (Radford et al.,
2021) uses the same symmetric loss with equal weights and a learnable temperature initialised
at 0.07 (logit scale capped at 100) and in-batch negatives gathered over all workers.

Our choices: CLIP's equal weighting and learnable temperature (init 0.07, cap 100); ConVIRT's
2-layer projection heads; the text encoder, its frozen part and the report text as described in
:mod:`cxrcl.methods.image_text` (default MiniLM, top 3 of 6 layers trained); no image
augmentation (the phantom and small real sets are registered and CXR-safe augmentations are the
image-only methods' business; ConVIRT crops and jitters). Negatives gathered across DDP ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

from cxrcl.methods.image_text import ImageTextConfig, ImageTextMethod


@dataclass(frozen=True)
class CLIPConfig(ImageTextConfig):
    pass


class CLIP(ImageTextMethod):
    name = "clip"
    config_class = CLIPConfig

    def training_step(self, images, generator):
        loss, logs = self.global_loss(images)
        return {"loss": loss, **logs}
