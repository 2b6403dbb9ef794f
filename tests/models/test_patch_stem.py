import pytest
import torch

from cxrcl.errors import CxrclError
from cxrcl.models.backbones import create_backbone

SPEC = "vit_tiny_patch16_224:patch_size=8:depth=2:stem=conv"


def _trained_stem_backbone(size=32):
    """The stem's output map starts at zero; give it weights as after training."""
    torch.manual_seed(0)
    b = create_backbone(SPEC, size).eval()
    torch.nn.init.normal_(b.vit.patch_embed.proj.to_embed.weight, std=0.05)
    return b


def test_each_token_depends_on_its_own_patch_only():
    b = _trained_stem_backbone()
    x = torch.randn(1, 1, 32, 32)
    y = x.clone()
    y[..., 8:16, 16:24] += 3.0  # patch (row 1, column 2) -> token 1 * 4 + 2
    changed = (b.embed(x) - b.embed(y)).abs().amax(-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [6]


def test_stem_adds_to_the_linear_embedding_and_learns():
    torch.manual_seed(0)
    plain = create_backbone("vit_tiny_patch16_224:patch_size=8:depth=2", 32).eval()
    torch.manual_seed(0)
    conv = create_backbone(SPEC, 32).eval()
    x = torch.randn(2, 1, 32, 32)
    assert torch.allclose(plain.embed(x), conv.embed(x), atol=1e-6)  # zero-initialised output map
    conv.train()
    conv(x).pow(2).mean().backward()
    assert conv.vit.patch_embed.proj.to_embed.weight.grad.abs().sum() > 0


def test_masked_patches_never_reach_the_encoder_with_the_conv_stem():
    b = _trained_stem_backbone()
    x = torch.randn(1, 1, 32, 32)
    keep = torch.tensor([[0, 5, 10, 15]])
    y = x.clone()
    y[..., 0:8, 8:16] = 50.0  # a dropped patch (token 1)
    assert torch.allclose(b(x, keep), b(y, keep), atol=1e-5)


def test_stem_errors_and_checkpoint_names():
    with pytest.raises(CxrclError, match="stem must be 'linear'"):
        create_backbone("resnet18:stem=conv", 32)
    with pytest.raises(CxrclError, match="stem must be 'linear'"):
        create_backbone("vit_tiny_patch16_224:patch_size=8:stem=cnn", 32)
    with pytest.raises(CxrclError, match="at least 4 px"):
        create_backbone("vit_tiny_patch16_224:patch_size=2:stem=conv", 32)
    names = set(create_backbone(SPEC, 32).state_dict())
    assert "vit.patch_embed.proj.linear.weight" in names and "vit.patch_embed.proj.convs.0.weight" in names

