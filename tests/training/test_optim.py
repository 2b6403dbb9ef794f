"""The warm-up/cosine schedule and the weight-decay groups."""

import math

import pytest
import torch

from cxrcl.methods.registry import build_method
from cxrcl.training.optim import param_groups, warmup_cosine
from tests.conftest import TINY_VIT


def test_warmup_then_cosine_to_the_floor():
    f = warmup_cosine(100, 0.1, 0.01)
    assert [f(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(100) == pytest.approx(0.01) and f(1000) == pytest.approx(0.01)
    values = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # monotone decay


def test_no_decay_on_norms_biases_tokens_position_embeddings_and_temperature():
    m = build_method("spcl:learnable_temperature=true", TINY_VIT, 32)
    groups = param_groups(m, 0.05)
    names = {id(p): n for n, p in m.named_parameters()}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decayed | plain == set(names.values()) and not decayed & plain
    for n in plain:
        assert n.endswith(("bias", "cls_token", "pos_embed", "log_inv_t")) or ".norm" in n or "norm" in n, n
    assert "backbone.vit.pos_embed" in plain and "backbone.vit.cls_token" in plain
    assert "criterion.log_inv_t" in plain
    assert all(p.ndim >= 2 for g in groups if g["weight_decay"] > 0 for p in g["params"])
    assert any(n.endswith("attn.qkv.weight") for n in decayed)


def test_scheduler_follows_the_schedule():
    p = torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(20, 0.1, 0.0))
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:2] == pytest.approx([0.5, 1.0]) and lrs[-1] < 0.01
