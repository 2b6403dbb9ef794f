import numpy as np
import pytest
import torch
from lightly.loss import NTXentLoss

from cxrcl.losses.info_nce import InfoNCELoss, info_nce


def reference_info_nce(q, k, t):
    """Loop-based InfoNCE in float64 numpy: mean over both directions."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    k = k / np.linalg.norm(k, axis=1, keepdims=True)
    total = 0.0
    for a, b in ((q, k), (k, q)):
        for i in range(len(a)):
            logits = np.array([a[i] @ b[j] / t for j in range(len(b))])
            total += -(logits[i] - np.log(np.exp(logits).sum()))
    return total / (2 * len(q))


def test_matches_reference_computation():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(12, 16, generator=g), torch.randn(12, 16, generator=g)
    ours = info_nce(q, k, 0.2).item()
    assert ours == pytest.approx(reference_info_nce(q.double().numpy(), k.double().numpy(), 0.2), rel=1e-5)


def test_intra_view_negatives_equals_lightly_ntxent():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(10, 8, generator=g), torch.randn(10, 8, generator=g)
    ours = info_nce(q, k, 0.5, intra_view_negatives=True)
    theirs = NTXentLoss(temperature=0.5)(q, k)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_identity_soft_targets_and_unit_weights_reduce_to_plain():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(9, 8, generator=g), torch.randn(9, 8, generator=g)
    plain = info_nce(q, k, 0.1)
    assert info_nce(q, k, 0.1, targets=torch.eye(9)).item() == pytest.approx(plain.item(), rel=1e-6)
    assert info_nce(q, k, 0.1, weights=torch.ones(9)).item() == pytest.approx(plain.item(), rel=1e-6)
    # a sample with zero weight does not count at all
    w = torch.ones(9)
    w[0] = 0
    single = info_nce(q, k, 0.1, weights=w, symmetric=False)
    per = torch.nn.functional.cross_entropy(
        torch.nn.functional.normalize(q) @ torch.nn.functional.normalize(k).T / 0.1,
        torch.arange(9), reduction="none")
    assert single.item() == pytest.approx(per[1:].mean().item(), rel=1e-5)


def test_soft_targets_change_the_loss():
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    soft = torch.full((6, 6), 0.5 / 5)
    soft.fill_diagonal_(0.5)
    assert info_nce(q, k, 0.1, targets=soft).item() != pytest.approx(info_nce(q, k, 0.1).item(), rel=1e-3)


def test_perfect_alignment_gives_low_loss_and_learnable_temperature():
    q = torch.eye(8)
    assert info_nce(q, q.clone(), 0.05).item() < 1e-3
    loss = InfoNCELoss(0.1, learnable_temperature=True)
    out = loss(torch.randn(8, 4), torch.randn(8, 4))
    out.backward()
    assert loss.log_inv_t.grad is not None
    assert loss.temperature.item() == pytest.approx(0.1, rel=1e-5)


def test_shape_errors():
    with pytest.raises(ValueError, match="must both be"):
        info_nce(torch.randn(4, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(0.0)


def test_logits_are_float32_under_bf16_autocast(monkeypatch):
    """Under Fabric's bf16-mixed (autocast) the similarities and the loss stay in float32."""
    import torch.nn.functional as F

    seen = []
    real = F.cross_entropy

    def spy(logits, *a, **k):
        seen.append(logits.dtype)
        return real(logits, *a, **k)

    monkeypatch.setattr(F, "cross_entropy", spy)
    lin = torch.nn.Linear(16, 16)
    x = torch.randn(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, k = lin(x), lin(x + 0.1)
        assert q.dtype == torch.bfloat16  # autocast is on for the network
        loss = info_nce(q, k, 0.1)
    assert seen and all(d == torch.float32 for d in seen)
    assert loss.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        ref = info_nce(q.float(), k.float(), 0.1)
    assert torch.allclose(loss, ref, atol=1e-6)
