import pytest
import torch

from cxrcl.errors import CxrclError
from cxrcl.methods.registry import METHODS, build_method
from tests.conftest import TINY_VIT


@pytest.mark.parametrize("spec,factor", [("spcl", 0.7), ("spcl:partition=block", 0.7),
                                         ("spcl:ratios=0.4,0.4", 0.7),
                                         ("spcl:intensity_jitter=true", 0.8), ("simclr", 0.9)])
def test_loss_falls_on_a_fixed_batch(spec, factor):
    """25 steps on one batch; SimCLR's views change every step, so its loss falls slower."""
    torch.manual_seed(0)
    m = build_method(spec, TINY_VIT, 32)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    x = torch.randn(16, 1, 32, 32)
    losses = []
    for step in range(25):
        loss = m.training_step(x, torch.Generator().manual_seed(step))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < factor * sum(losses[:5]) / 5, losses


def test_spcl_views_are_the_two_partitions_and_batched_pass_matches_separate():
    torch.manual_seed(0)
    m = build_method("spcl", TINY_VIT, 32).eval()
    x = torch.randn(4, 1, 32, 32)
    g = torch.Generator().manual_seed(3)
    loss = m.training_step(x, g)["loss"]
    # recompute with two separate passes on the same partition
    idx1, idx2 = m.partition(4, torch.Generator().manual_seed(3), x.device)
    t = m.backbone.embed(x)
    z1 = m.head(m.backbone.pool(m.backbone.encode(t, idx1)))
    z2 = m.head(m.backbone.pool(m.backbone.encode(t, idx2)))
    assert loss.item() == pytest.approx(m.criterion(z1, z2).item(), rel=1e-5)


def test_spcl_on_cnn_masks_cells():
    """On a CNN each view is encoded from its own cells only: changing the other view's cells
    changes nothing, the loss is InfoNCE of the two views, and its gradient reaches the stem."""
    torch.manual_seed(0)
    m = build_method("spcl", "resnet18", 64).eval()  # eval: BatchNorm with fixed statistics
    x = torch.randn(4, 1, 64, 64)
    idx1, idx2 = m.partition(4, torch.Generator().manual_seed(3), x.device)
    t = m.backbone.embed(x)
    other = t.clone()
    other.scatter_(1, idx2.unsqueeze(-1).expand(-1, -1, t.shape[-1]), 5.0)  # rewrite view 2's cells
    f1 = m.backbone.pool(m.backbone.encode(t, idx1))
    assert torch.allclose(f1, m.backbone.pool(m.backbone.encode(other, idx1)), atol=1e-6)
    assert not torch.allclose(f1, m.backbone.pool(m.backbone.encode(t, idx2)), atol=1e-3)
    m.train()
    out = m.training_step(x, torch.Generator().manual_seed(0))
    out["loss"].backward()
    stem = next(m.backbone.stem.parameters())
    assert torch.isfinite(out["loss"]) and stem.grad is not None and stem.grad.abs().sum() > 0


def test_registry_and_spec_errors():
    assert {"spcl", "simclr"} <= set(METHODS)
    with pytest.raises(CxrclError, match="unknown method"):
        build_method("nope")
    with pytest.raises(CxrclError, match="valid keys"):
        build_method("spcl:ratio=0.5", TINY_VIT, 32)
    with pytest.raises(CxrclError, match="ratios"):
        build_method("spcl:ratios=0.7,0.7", TINY_VIT, 32)
