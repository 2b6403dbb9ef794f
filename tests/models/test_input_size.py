"""A trained backbone evaluated at another input size (``cxrcl eval --image-size``)."""

import pytest
import torch
from timm.layers import resample_abs_pos_embed

from cxrcl.errors import CxrclError
from cxrcl.models.backbones import create_backbone
from cxrcl.models.input_size import set_image_size

VIT = "vit_tiny_patch16_224:patch_size=8:depth=1"


def test_vit_position_embeddings_are_resampled_to_the_new_grid():
    torch.manual_seed(0)
    bb = create_backbone(VIT, 64).eval()
    old_pos = bb.vit.pos_embed.detach().clone()  # [1, 1 + 8*8, D]
    record = set_image_size(bb, 32, 64)
    assert record["trained_image_size"] == 64 and record["image_size"] == 32
    assert "resampled 8x8 -> 4x4" in record["position_embedding"]
    assert bb.grid == (4, 4) and bb.num_tokens == 16
    expected = resample_abs_pos_embed(old_pos, new_size=[4, 4], old_size=[8, 8], num_prefix_tokens=1)
    assert torch.allclose(bb.vit.pos_embed, expected)
    with torch.no_grad():
        z = bb(torch.randn(3, 1, 32, 32))
        assert z.shape == (3, bb.dim) and torch.isfinite(z).all()
        keep = torch.arange(8).expand(3, -1)  # the token-subset path (S-PCL views) works too
        assert torch.isfinite(bb(torch.randn(3, 1, 32, 32), keep)).all()


def test_same_size_changes_nothing():
    bb = create_backbone(VIT, 64)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    assert set_image_size(bb, 64, 64) is None
    assert all(torch.equal(before[k], v) for k, v in bb.state_dict().items())


def test_size_not_a_multiple_of_the_patch_is_refused():
    with pytest.raises(CxrclError, match="not a multiple of the patch size 8"):
        set_image_size(create_backbone(VIT, 64), 36, 64)


def test_cnn_token_grid_is_recomputed():
    bb = create_backbone("resnet18", 64).eval()
    record = set_image_size(bb, 32, 64)
    assert record["image_size"] == 32 and bb.grid == (8, 8)
    with torch.no_grad():
        assert torch.isfinite(bb(torch.randn(2, 1, 32, 32))).all()
