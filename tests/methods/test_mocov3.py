"""MoCo v3 and the momentum encoder: the EMA rate, its schedule, and training end to end."""

import pytest
import torch

from cxrcl.methods.registry import build_method
from cxrcl.models.momentum import KeyQueue, MomentumCopy, momentum_at
from tests.conftest import TINY_VIT


def test_momentum_update_is_an_ema_with_the_configured_rate():
    torch.manual_seed(0)
    online = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    ema = MomentumCopy(online)
    before = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
        online[1].running_mean.fill_(2.0)
    ema.update(0.9)
    for old, new, cur in zip(before, ema.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * cur)
        assert not new.requires_grad
    assert torch.equal(ema[0][1].running_mean, online[1].running_mean)
    with pytest.raises(ValueError):
        ema.update(1.5)


def test_momentum_schedule_is_a_function_of_the_step():
    assert momentum_at(0, 100, 0.99) == pytest.approx(0.99)
    assert momentum_at(50, 100, 0.99) == pytest.approx(0.995, abs=1e-4)
    assert momentum_at(100, 100, 0.99) == pytest.approx(1.0)
    assert momentum_at(37, 100, 0.9, schedule="constant") == 0.9


def test_mocov3_step_applies_the_scheduled_ema_to_the_key_encoder():
    torch.manual_seed(0)
    m = build_method("mocov3", TINY_VIT, 32)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(8, 1, 32, 32)
    for step in range(2):
        m.set_progress(step, 10)
        key_before = [p.clone() for p in m.key_encoder.parameters()]
        online = [p.clone() for p in list(m.backbone.parameters()) + list(m.head.parameters())]
        loss = m.training_step(x, torch.Generator().manual_seed(step))["loss"]
        rate = momentum_at(step, 10, 0.99)
        for kb, ka, o in zip(key_before, m.key_encoder.parameters(), online, strict=True):
            torch.testing.assert_close(ka, rate * kb + (1 - rate) * o)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in m.key_encoder.parameters())


def test_key_queue_is_fifo_and_persistent():
    q = KeyQueue(5, 2)
    assert {"keys", "ptr", "filled"} <= set(q.state_dict())
    q.push(torch.tensor([[1.0, 0], [0, 1.0], [3.0, 0]]))
    q.push(torch.tensor([[0, 2.0], [1.0, 0], [0, 5.0]]))
    assert int(q.ptr) == 1 and int(q.filled) == 5
    torch.testing.assert_close(q.keys[0], torch.tensor([0.0, 1.0]))  # the 6th key wrapped to slot 0
    torch.testing.assert_close(q.keys[3], torch.tensor([0.0, 1.0]))


def test_mocov3_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    m = build_method("mocov3", TINY_VIT, 32)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    x = torch.randn(16, 1, 32, 32)
    losses = []
    for step in range(25):
        m.set_progress(step, 25)
        loss = m.training_step(x, torch.Generator().manual_seed(step))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.96 * sum(losses[:5]) / 5, losses
