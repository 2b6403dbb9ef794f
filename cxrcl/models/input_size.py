"""Run a trained backbone at another input size (``cxrcl eval --image-size``).

A ViT's absolute position embeddings are learned for its training grid (64 px with 16 px
patches: 4 x 4), so a 32 px input does not fit them. We resample them to the new grid with
timm's ``VisionTransformer.set_input_size``, which calls ``timm.layers.resample_abs_pos_embed``
(bicubic interpolation of the patch-position grid; class-token positions are kept as they are),
the 2D interpolation of position embeddings that the ViT paper uses to fine-tune at another
resolution (Dosovitskiy et al. 2021, section 3.2). The weights are otherwise unchanged. A CNN
needs no change beyond its token grid, which is recomputed.

Our choice: resample rather than refuse, and say so in the eval JSON (:func:`set_image_size`
returns the record). A size that is not a multiple of the patch size is refused.
"""

from __future__ import annotations

import torch

from cxrcl.errors import CxrclError
from cxrcl.models.backbones import CNNBackbone, TokenBackbone, ViTBackbone


def set_image_size(backbone: TokenBackbone, image_size: int, trained_size: int) -> dict | None:
    """Adapt ``backbone`` (built for ``trained_size``) to ``image_size`` in place.

    Returns ``None`` when nothing changes, else a record for the results JSON, e.g.
    ``{"trained_image_size": 64, "image_size": 32, "position_embedding": "resampled 4x4 -> 2x2
    (timm resample_abs_pos_embed, bicubic)"}``.
    """
    image_size, trained_size = int(image_size), int(trained_size)
    if image_size < 1:
        raise CxrclError(f"--image-size {image_size}: give a positive size, e.g. {trained_size}")
    if image_size == trained_size:
        return None
    record = {"trained_image_size": trained_size, "image_size": image_size}
    if isinstance(backbone, ViTBackbone):
        patch = backbone.patch_size
        if image_size % patch:
            raise CxrclError(f"--image-size {image_size} is not a multiple of the patch size {patch} "
                             f"of {backbone.name}; use e.g. {max(patch, image_size // patch * patch)}")
        old = tuple(backbone.grid)
        backbone.vit.set_input_size(img_size=(image_size, image_size))
        backbone.grid = tuple(backbone.vit.patch_embed.grid_size)
        backbone.num_tokens = backbone.grid[0] * backbone.grid[1]
        new = backbone.grid
        if backbone.vit.pos_embed is None:
            record["position_embedding"] = "none (the model has no absolute position embedding)"
        else:
            record["position_embedding"] = (f"resampled {old[0]}x{old[1]} -> {new[0]}x{new[1]} "
                                            "(timm resample_abs_pos_embed, bicubic)")
        return record
    if isinstance(backbone, CNNBackbone):
        device = next(backbone.parameters()).device
        with torch.no_grad():
            was_training = backbone.training
            probe = backbone.eval().stem(torch.zeros(1, 1, image_size, image_size, device=device))
            backbone.train(was_training)
        backbone.grid, backbone.image_size = tuple(probe.shape[-2:]), image_size
        backbone.num_tokens = backbone.grid[0] * backbone.grid[1]
        record["position_embedding"] = "none (convolutional backbone; token grid recomputed)"
        return record
    raise CxrclError(f"backbone {backbone.name} cannot be run at --image-size {image_size}; "
                     f"evaluate at its training size {trained_size}")
