"""DINO: teacher = EMA of the student, centre and teacher temperature, teacher as the encoder."""

import math

import pytest
import torch

from cxrcl.methods.registry import build_method
from cxrcl.models.momentum import momentum_at
from tests.conftest import TINY_VIT


def dino(spec="dino"):
    torch.manual_seed(0)
    return build_method(spec, TINY_VIT, 32)


def test_teacher_starts_as_the_student_and_follows_it_by_ema():
    m = dino()
    student = list(m.backbone.parameters()) + list(m.head.parameters())
    for s, t in zip(student, m.teacher.parameters(), strict=True):
        assert torch.equal(s, t) and not t.requires_grad
    with torch.no_grad():
        for p in student:
            p.add_(0.1)
    m.set_progress(30, 100)
    m.training_step(torch.randn(4, 1, 32, 32), torch.Generator().manual_seed(0))
    rate = momentum_at(30, 100, 0.996)
    some = next(iter(m.teacher.parameters()))
    torch.testing.assert_close(some, rate * (student[0] - 0.1) + (1 - rate) * student[0])
    assert m.encoder is m.teacher[0]  # the teacher's backbone is the downstream encoder


def test_centre_is_checkpointed_and_moves_towards_the_teacher_mean():
    m = dino("dino:center_momentum=0.5")
    assert "criterion.center" in m.state_dict()
    assert float(m.criterion.center.abs().sum()) == 0.0
    m.training_step(torch.randn(4, 1, 32, 32), torch.Generator().manual_seed(0))
    assert float(m.criterion.center.abs().sum()) > 0.0


def test_teacher_temperature_warms_up_with_the_step():
    m = dino("dino:teacher_temp=0.04,0.07:teacher_warmup=0.5")
    temps = []
    for step in (0, 25, 50, 90):
        m.set_progress(step, 100)
        temps.append(m.teacher_temp_now())
    assert temps == pytest.approx([0.04, 0.055, 0.07, 0.07])


def test_local_crops_add_student_views_and_loss_is_finite():
    m = dino("dino:local_crops=0")
    out = m.training_step(torch.randn(4, 1, 32, 32), torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad


def test_collapse_diagnostics_read_ln_k_for_a_uniform_teacher_and_zero_for_one_prototype():
    m = dino("dino:num_prototypes=64")
    uniform = m.teacher_entropies(torch.zeros(6, 64), 0.04)
    assert float(uniform["teacher_entropy"]) == pytest.approx(math.log(64), abs=1e-5)
    assert float(uniform["teacher_batch_entropy"]) == pytest.approx(math.log(64), abs=1e-5)
    one = torch.zeros(6, 64)
    one[:, 3] = 10.0  # every image on prototype 3, sharply
    collapsed = m.teacher_entropies(one, 0.04)
    assert float(collapsed["teacher_entropy"]) < 1e-3 and float(collapsed["teacher_batch_entropy"]) < 1e-3
    spread = torch.zeros(64, 64)
    spread[torch.arange(64), torch.arange(64)] = 10.0  # each image sharply on its own prototype
    healthy = m.teacher_entropies(spread, 0.04)
    assert float(healthy["teacher_entropy"]) < 1e-3
    assert float(healthy["teacher_batch_entropy"]) == pytest.approx(math.log(64), abs=1e-3)


def _toy_losses(center_momentum: float, steps: int = 60) -> list[float]:
    """DINO on 16 fixed noise images (batch = the set), 2 global crops, 64 prototypes."""
    m = dino(f"dino:num_prototypes=64:local_crops=0:center_momentum={center_momentum}")
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    x = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    losses = []
    for step in range(steps):
        m.set_progress(step, steps)
        loss = m.training_step(x, torch.Generator().manual_seed(step))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_loss_falls_with_a_slow_centre_and_collapses_to_uniform_with_a_fast_one_at_small_batch():
    slow = _toy_losses(0.99)
    assert sum(slow[-10:]) / 10 < 0.6 * slow[0]  # learns: about 3.6 -> 1.5
    fast = _toy_losses(0.9)  # DINO's 0.9 at a batch of 16: the centre follows the batch
    assert sum(fast[-10:]) / 10 > 0.9 * math.log(64)  # the loss of a uniform teacher


def test_distillation_loss_is_lightlys_dino_loss_given_the_same_targets():
    """The loss of centering=sinkhorn is DINO's cross-entropy: given the centred, sharpened
    teacher softmax as targets it equals lightly's DINOLoss (2 global + 2 local views)."""
    m = dino("dino:num_prototypes=64")
    g = torch.Generator().manual_seed(0)
    teacher = [torch.randn(5, 64, generator=g) for _ in range(2)]
    student = [torch.randn(5, 64, generator=g) for _ in range(4)]
    m.criterion.center.normal_(generator=g)
    targets = torch.softmax((torch.cat(teacher) - m.criterion.center.reshape(1, -1)) / 0.04, dim=-1)
    mine = m.distillation_loss(list(targets.split(5)), student)
    torch.testing.assert_close(mine, m.criterion(teacher, student, teacher_temp=0.04))


def test_sinkhorn_targets_share_the_prototypes_equally_even_for_a_collapsed_teacher():
    m = dino("dino:num_prototypes=16:centering=sinkhorn")
    one = torch.zeros(32, 16)
    one[:, 3] = 10.0  # every image prefers prototype 3: softmax centring alone would collapse
    one += 0.1 * torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    p = m.sinkhorn_targets(one, 0.04)
    torch.testing.assert_close(p.sum(1), torch.ones(32))
    assert float(p.sum(0).min()) > 1.0 and float(p.sum(0).max()) < 3.0  # about 32 rows / 16 each
    ent = m.target_entropies(p)
    assert float(ent["teacher_batch_entropy"]) > 0.99 * math.log(16)
    assert float(m.teacher_entropies(one, 0.04)["teacher_batch_entropy"]) < 0.01  # softmax: collapsed
    out = m.training_step(torch.randn(4, 1, 32, 32), torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    assert float(m.criterion.center.abs().sum()) == 0.0  # no running centre in this mode
    with pytest.raises(Exception, match="centering"):
        dino("dino:centering=median")


def test_frozen_last_layer_gets_no_gradient_then_trains_and_outputs_are_unchanged():
    m = dino("dino:num_prototypes=64:local_crops=0:freeze_last_layer=0.5:norm_last_layer=false")
    x = torch.randn(4, 1, 32, 32)
    feats = m.backbone(x)
    m.set_progress(10, 100)  # frozen: same outputs as the head, no gradient to the prototypes
    torch.testing.assert_close(m.student_head(feats), m.head(feats))
    m.training_step(x, torch.Generator().manual_seed(0))["loss"].backward()
    last = m.head.last_layer
    assert last.weight_v.grad is None and last.weight_g.grad is None
    assert next(m.head.layers.parameters()).grad is not None
    m.zero_grad()
    m.set_progress(50, 100)  # from the configured fraction on the prototypes and their norms train
    m.training_step(x, torch.Generator().manual_seed(0))["loss"].backward()
    assert last.weight_v.grad is not None and last.weight_g.grad is not None
    assert dino().head.last_layer.weight_g.requires_grad is False  # DINO's default: unit-norm prototypes
