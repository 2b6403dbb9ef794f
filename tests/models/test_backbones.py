import pytest
import torch

from cxrcl.errors import CxrclError
from cxrcl.models.backbones import create_backbone, gather_tokens


def test_vit_encode_all_tokens_equals_timm_forward_features():
    torch.manual_seed(0)
    b = create_backbone("vit_tiny_patch16_224:patch_size=8:depth=2", 32).eval()
    x = torch.randn(2, 1, 32, 32)
    assert torch.allclose(b.encode(b.embed(x)).tokens, b.vit.forward_features(x), atol=1e-5)


def test_vit_subset_is_gathered_so_compute_shrinks():
    from torch.utils.flop_counter import FlopCounterMode

    b = create_backbone("vit_tiny_patch16_224:patch_size=8:depth=2", 64).eval()
    x = torch.randn(2, 1, 64, 64)
    tokens = b.embed(x)
    keep = torch.rand(2, b.num_tokens).argsort(1)[:, : b.num_tokens // 2]
    enc = b.encode(tokens, keep)
    assert enc.tokens.shape == (2, 1 + b.num_tokens // 2, b.dim)
    with FlopCounterMode(display=False) as full:
        b.encode(tokens)
    with FlopCounterMode(display=False) as half:
        b.encode(tokens, keep)
    assert half.get_total_flops() < 0.55 * full.get_total_flops()
    # the kept tokens are exactly the gathered rows (positions included)
    assert torch.equal(gather_tokens(tokens, keep)[0, 0], tokens[0, keep[0, 0]])


def test_subset_result_depends_only_on_kept_tokens():
    torch.manual_seed(0)
    b = create_backbone("vit_tiny_patch16_224:patch_size=8:depth=2", 32).eval()
    x = torch.randn(1, 1, 32, 32)
    keep = torch.arange(0, 16, 2).unsqueeze(0)
    t1 = b.embed(x)
    t2 = t1.clone()
    t2[:, 1::2] = 99.0  # change only dropped tokens
    assert torch.allclose(b(x, keep), b.pool(b.encode(t2, keep)), atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto"])
def test_cnn_tokens_are_feature_map_cells(name):
    b = create_backbone(name, 64)
    x = torch.randn(2, 1, 64, 64)
    tokens = b.embed(x)
    assert tokens.shape == (2, b.grid[0] * b.grid[1], b.token_dim)
    keep = torch.arange(0, b.num_tokens, 3).expand(2, -1)
    assert b(x, keep).shape == (2, b.dim)
    assert not torch.allclose(b(x, keep), b(x))


def test_patch_size_override_and_errors():
    b = create_backbone("vit_tiny_patch16_224:patch_size=8", 64)
    assert b.num_tokens == 64 and b.patch_size == 8
    with pytest.raises(CxrclError, match="valid keys: .*patch_size"):
        create_backbone("vit_tiny_patch16_224:patchsize=8", 64)
    with pytest.raises(CxrclError, match="unknown backbone"):
        create_backbone("not_a_model", 64)
    with pytest.raises(CxrclError, match="multiple of the patch size"):
        create_backbone("vit_tiny_patch16_224", 72)


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny_patch16_224:patch_size=8:depth=2"])
def test_checkpoint_round_trip(name, tmp_path):
    """Weights saved with safetensors load back into a freshly built model (no shared aliases)."""
    from safetensors.torch import save_model

    from cxrcl.methods.registry import build_method
    from cxrcl.training.checkpoint import load_weights

    torch.manual_seed(0)
    a = build_method("spcl", name, 32)
    save_model(a, str(tmp_path / "m.safetensors"))
    torch.manual_seed(1)
    b = build_method("spcl", name, 32)
    load_weights(b, tmp_path / "m.safetensors")
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(a.eval().encoder(x), b.eval().encoder(x))
