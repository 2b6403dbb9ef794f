import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cxrcl.errors import CxrclError
from cxrcl.methods.registry import build_method
from cxrcl.models.saliency import SparseEncoder, keep_count, scheduled_keep_ratio
from cxrcl.training.fit import pretrain
from tests.conftest import TINY_VIT

VIT4 = "vit_tiny_patch16_224:patch_size=8:depth=4"  # 16 tokens at 32 px


def tokens_seen_by_blocks(method, x):
    """Token count [M] that each transformer block receives in the encoder's forward pass."""
    seen = []
    hooks = [b.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
             for b in method.backbone.vit.blocks]
    try:
        with torch.no_grad():
            method.encoder(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.7])
def test_kept_set_hits_the_target_ratio(ratio):
    torch.manual_seed(0)
    m = build_method(f"sparsecontrast:keep_ratio={ratio}", VIT4, 32).eval()
    out = m.pruned(torch.randn(6, 1, 32, 32))
    k = keep_count(16, ratio)
    assert out.keep.shape == (6, k) and out.logits.shape == (6, 16)
    assert all(len(set(row.tolist())) == k for row in out.keep)  # distinct tokens
    assert torch.equal(out.keep, out.logits.topk(k, 1).indices.sort(1).values)  # the top-k


def test_later_blocks_receive_only_the_kept_tokens():
    torch.manual_seed(0)
    m = build_method("sparsecontrast:keep_ratio=0.5:prune_at=1", VIT4, 32).eval()
    assert isinstance(m.encoder, SparseEncoder)
    # 16 patch tokens + the class token before pruning; 8 + 1 after block 1
    assert tokens_seen_by_blocks(m, torch.randn(3, 1, 32, 32)) == [17, 9, 9, 9]
    # and in training too (both views, the ramp finished)
    seen = []
    hooks = [b.register_forward_pre_hook(lambda mod, a: seen.append(tuple(a[0].shape[:2])))
             for b in m.backbone.vit.blocks]
    m.train().training_step(torch.randn(3, 1, 32, 32), torch.Generator().manual_seed(0))
    for h in hooks:
        h.remove()
    assert seen == [(6, 17), (6, 9), (6, 9), (6, 9)]


def test_pruning_really_cuts_vit_flops():
    m = build_method("sparsecontrast:keep_ratio=0.5:prune_at=1", VIT4, 32).eval()
    dense = build_method("sparsecontrast:keep_ratio=1.0", VIT4, 32).eval()
    x = torch.randn(4, 1, 32, 32)

    def flops(enc):
        with FlopCounterMode(display=False) as c, torch.no_grad():
            enc(x)
        return c.get_total_flops()
    # 1 dense block + 3 blocks on half the tokens ~ (1 + 1.5) / 4 = 0.625 of the dense cost
    assert flops(m.encoder) < 0.68 * flops(dense.encoder)


def test_fused_token_averages_the_pruned_tokens_and_is_one_more_token():
    torch.manual_seed(0)
    x = torch.randn(3, 1, 32, 32)
    plain = build_method("sparsecontrast:keep_ratio=0.5:prune_at=1", VIT4, 32).eval()
    fused = {mode: build_method(f"sparsecontrast:keep_ratio=0.5:prune_at=1:fuse={mode}", VIT4, 32).eval()
             for mode in ("token", "area")}
    for m in fused.values():
        m.load_state_dict(plain.state_dict())
        # the kept 8 + the class token + ONE fused token after block 1
        assert tokens_seen_by_blocks(m, x) == [17, 10, 10, 10]
    # the fused token is the softmax(logit)-weighted mean of exactly the pruned tokens
    sp = fused["area"].encoder
    seen = []
    hook = sp.backbone.vit.blocks[1].register_forward_pre_hook(lambda mod, a: seen.append(a[0]))
    with torch.no_grad():
        out = sp.run(x, 0.5)
    hook.remove()
    patches = sp._vit_front(x)[:, 1:]
    for b in range(3):
        dropped = sorted(set(range(16)) - set(out.keep[b].tolist()))
        w = torch.softmax(out.logits[b, dropped], 0)
        assert torch.allclose(seen[0][b, -1], (w[:, None] * patches[b, dropped]).sum(0), atol=1e-5)
    # "area" pools the fused token with the weight of the 8 it replaces, "token" as one token
    with torch.no_grad():
        h = sp.backbone.vit.norm(sp.backbone.run_blocks(seen[0], 1, None))[:, 1:]
        assert torch.allclose(fused["area"].encoder(x), (h[:, :-1].sum(1) + 8 * h[:, -1]) / 16, atol=1e-5)
        assert torch.allclose(fused["token"].encoder(x), h.mean(1), atol=1e-5)
        assert not torch.allclose(fused["token"].encoder(x), plain.encoder(x), atol=1e-3)
    # with fusion on, training still gives the predictor a gradient
    m = fused["area"].train()
    m.set_progress(99, 100)
    m.training_step(torch.randn(4, 1, 32, 32), torch.Generator().manual_seed(0))["loss"].backward()
    assert m.predictor.mlp[-1].weight.grad.abs().sum() > 0


def test_keep_ratio_one_is_simclr_exactly_loss_and_gradients():
    torch.manual_seed(0)
    simclr = build_method("simclr", VIT4, 32)
    torch.manual_seed(0)
    dense = build_method("sparsecontrast:keep_ratio=1.0", VIT4, 32)
    assert not hasattr(dense, "predictor")
    assert dense.state_dict().keys() == simclr.state_dict().keys()
    for a, b in zip(simclr.state_dict().values(), dense.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    x = torch.randn(8, 1, 32, 32)
    la = simclr.training_step(x, torch.Generator().manual_seed(5))["loss"]
    lb = dense.training_step(x, torch.Generator().manual_seed(5))["loss"]
    assert torch.equal(la, lb)
    la.backward()
    lb.backward()
    for (name, pa), pb in zip(simclr.named_parameters(), dense.parameters(), strict=True):
        assert (pa.grad is None) == (pb.grad is None), name
        if pa.grad is not None:
            assert torch.equal(pa.grad, pb.grad), name


def test_straight_through_changes_nothing_forward_and_trains_the_predictor():
    """During the dense warm-up (all tokens kept) the loss is SimCLR's to the bit, yet the
    contrastive loss alone (sparsity_weight=0) sends a gradient into the predictor."""
    torch.manual_seed(0)
    simclr = build_method("simclr", VIT4, 32)
    torch.manual_seed(0)
    sc = build_method("sparsecontrast:keep_ratio=0.5:sparsity_weight=0", VIT4, 32)
    sc.load_state_dict(simclr.state_dict(), strict=False)
    sc.set_progress(0, 100)  # dense warm-up
    x = torch.randn(8, 1, 32, 32)
    out = sc.training_step(x, torch.Generator().manual_seed(1))
    assert float(out["keep_ratio"]) == 1.0
    assert torch.equal(out["loss"], simclr.training_step(x, torch.Generator().manual_seed(1))["loss"])
    out["loss"].backward()
    assert sc.predictor.mlp[0].weight.grad.abs().sum() > 0
    # and after the ramp, with pruning (Gumbel top-k), the gradient still arrives
    sc.zero_grad()
    sc.set_progress(99, 100)
    out = sc.training_step(x, torch.Generator().manual_seed(1))
    assert float(out["keep_ratio"]) == 0.5
    out["loss"].backward()
    assert sc.predictor.mlp[0].weight.grad.abs().sum() > 0


def test_schedule_follows_its_ramp():
    r = [scheduled_keep_ratio(p / 100, 0.5, 0.1, 0.3) for p in range(100)]
    assert r[:10] == [1.0] * 10                                   # dense warm-up
    assert r[10] == 1.0 and r[25] == pytest.approx(0.75) and r[40:] == [0.5] * 60
    assert all(a >= b for a, b in zip(r, r[1:], strict=False))                  # monotone ramp
    assert scheduled_keep_ratio(0.5, 0.3, 0.2, 0.0) == 0.3        # no ramp: a step
    m = build_method("sparsecontrast:keep_ratio=0.5:dense_fraction=0.25:ramp_fraction=0.5", VIT4, 32)
    assert m.current_keep_ratio() == 0.5  # outside the loop: the end of the schedule
    seen = []
    for step in (0, 24, 25, 50, 75, 99):
        m.set_progress(step, 100)
        seen.append(float(m.training_step(torch.randn(2, 1, 32, 32),
                                          torch.Generator().manual_seed(0))["keep_ratio"]))
    assert seen == pytest.approx([1.0, 1.0, 1.0, 0.75, 0.5, 0.5])


def test_cnn_variant_runs_later_stages_on_the_salient_windows_only():
    torch.manual_seed(0)
    m = build_method("sparsecontrast:keep_ratio=0.5", "resnet18", 128).eval()
    dense = build_method("sparsecontrast:keep_ratio=1.0", "resnet18", 128).eval()
    x = torch.randn(2, 1, 128, 128)
    shapes = []
    hook = m.backbone.stages[1].register_forward_pre_hook(lambda mod, a: shapes.append(tuple(a[0].shape)))
    with torch.no_grad():
        out = m.pruned(x)
    hook.remove()
    # after layer1 the map is 32x32; 8x8 windows -> a 4x4 grid; 8 of 16 windows go on, as a batch
    assert out.grid == (4, 4) and out.keep.shape == (2, 8)
    assert shapes == [(2 * 8, 64, 8, 8)]

    def flops(enc):
        with FlopCounterMode(display=False) as c, torch.no_grad():
            enc(x)
        return c.get_total_flops()
    assert flops(m.encoder) < 0.7 * flops(dense.encoder)
    loss = m.train().training_step(x.repeat(2, 1, 1, 1), torch.Generator().manual_seed(0))["loss"]
    loss.backward()
    assert m.predictor.mlp[0].weight.grad.abs().sum() > 0


def test_config_errors_name_the_key():
    with pytest.raises(CxrclError, match="keep_ratio"):
        build_method("sparsecontrast:keep_ratio=0", VIT4, 32)
    with pytest.raises(CxrclError, match="prune_at"):
        build_method("sparsecontrast:prune_at=4", VIT4, 32)
    with pytest.raises(CxrclError, match="ramp_fraction"):
        build_method("sparsecontrast:dense_fraction=0.8:ramp_fraction=0.5", VIT4, 32)
    with pytest.raises(CxrclError, match="window"):
        build_method("sparsecontrast:window=5", "resnet18", 64)
    with pytest.raises(CxrclError, match="fuse"):
        build_method("sparsecontrast:fuse=merge", VIT4, 32)
    with pytest.raises(CxrclError, match="fuse needs a ViT"):
        build_method("sparsecontrast:fuse=area", "resnet18", 64)


def test_resume_is_exact_and_the_run_follows_the_schedule(tiny_ds, tmp_path):
    train = dict(steps=8, batch_size=16, log_every=1, checkpoint_every=4, progress=False)
    spec = "sparsecontrast:keep_ratio=0.5:dense_fraction=0.25:ramp_fraction=0.5"
    full, part = tmp_path / "full", tmp_path / "part"
    pretrain(spec, tiny_ds.root, full, backbone=TINY_VIT, train_overrides=train)
    pretrain(spec, tiny_ds.root, part, backbone=TINY_VIT, train_overrides=train, stop_after=3)
    pretrain(spec, tiny_ds.root, part, resume=True)
    rec = [json.loads(line) for line in open(full / "metrics.jsonl")]
    assert [r["keep_ratio"] for r in rec] == pytest.approx([1, 1, 1, 0.875, 0.75, 0.625, 0.5, 0.5])
    assert [r["loss"] for r in rec] == [json.loads(line)["loss"] for line in open(part / "metrics.jsonl")]


def test_spcl_saliency_partition_splits_only_the_salient_tokens():
    torch.manual_seed(0)
    m = build_method("spcl:partition=saliency:saliency_keep=0.5", VIT4, 32)
    tokens = m.backbone.embed(torch.randn(4, 1, 32, 32))
    (idx1, idx2), logits, rho = m.salient_partition(tokens, torch.Generator().manual_seed(0))
    assert rho == 0.5 and idx1.shape == idx2.shape == (4, 4)  # 8 salient of 16, halved
    for a, b in zip(idx1.tolist(), idx2.tolist(), strict=True):
        assert not set(a) & set(b)
    m.set_progress(0, 10)  # dense warm-up: every token is shared out
    (idx1, idx2), _, rho = m.salient_partition(tokens, torch.Generator().manual_seed(0))
    assert rho == 1.0 and idx1.shape[1] + idx2.shape[1] == 16
    m.set_progress(9, 10)
    out = m.training_step(torch.randn(4, 1, 32, 32), torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and m.predictor.mlp[0].weight.grad.abs().sum() > 0
    with pytest.raises(CxrclError, match="saliency_keep"):
        build_method("spcl:partition=saliency:saliency_keep=1.5", VIT4, 32)


def test_rarity_target_flags_the_atypical_tokens_and_trains_the_predictor():
    torch.manual_seed(0)
    m = build_method("sparsecontrast:keep_ratio=0.25:rarity_weight=1", VIT4, 32)
    assert {"pixel_mean", "pixel_sq", "pixel_updates"} <= set(m.state_dict())
    x = torch.randn(64, 1, 32, 32) * 0.1
    x[:, :, :8, :8] += torch.linspace(-1, 1, 64).view(64, 1, 1, 1)  # token 0 varies, others not
    m.rarity_target(x)
    odd = x.clone()
    odd[:, :, 24:, 24:] += 3.0                                       # token 15 is unusual here
    target = m.rarity_target(odd)
    assert target.shape == (64, 16) and bool((target.sum(1) == 4).all())
    assert bool((target[:, 15] == 1).all())
    out = m.training_step(torch.randn(4, 1, 32, 32), torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert "rarity" in out and m.predictor.mlp[0].weight.grad.abs().sum() > 0
    with pytest.raises(CxrclError, match="ViT"):
        build_method("sparsecontrast:rarity_weight=1", "resnet18", 64)


def test_image_frame_rarity_follows_the_atypical_place_into_each_view():
    """rarity_frame=image: z-scores on the original images, carried into a view by its grid. An
    identity grid gives the view-frame target of the same images; a grid that shifts the image
    by one token moves the flagged token with it."""
    import torch.nn.functional as F
    torch.manual_seed(0)
    x = torch.randn(64, 1, 32, 32) * 0.1
    x[:, :, :8, :8] += torch.linspace(-1, 1, 64).view(64, 1, 1, 1)
    odd = x.clone()
    odd[:, :, 16:24, 16:24] += 3.0                                   # token 10 (row 2, col 2)
    twin = [build_method("sparsecontrast:keep_ratio=0.25:rarity_weight=1" + f, VIT4, 32)
            for f in (":rarity_frame=view", ":rarity_frame=image")]
    for m in twin:
        m.rarity_target(x)
    identity = F.affine_grid(torch.eye(2, 3).expand(64, 2, 3), [64, 1, 32, 32], align_corners=False)
    assert torch.equal(twin[1].rarity_target(odd, identity), twin[0].rarity_target(odd))
    shift = torch.eye(2, 3).expand(64, 2, 3).clone()
    shift[:, 0, 2] = 0.5                       # the view shows the image 8 px (one token) to the right
    grid = F.affine_grid(shift, [64, 1, 32, 32], align_corners=False)
    moved = twin[1].rarity_target(odd, grid)
    assert bool((moved[:, 9] == 1).all()) and not bool((moved[:, 10] == 1).all())
    m = twin[1]
    out = m.training_step(torch.randn(4, 1, 32, 32), torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert "rarity" in out and m.predictor.mlp[0].weight.grad.abs().sum() > 0
    with pytest.raises(CxrclError, match="rarity_frame"):
        build_method("sparsecontrast:rarity_weight=1:rarity_frame=views", VIT4, 32)


def test_original_frame_rarity_trains_the_predictor_on_the_unaugmented_images():
    """rarity_frame=original: the predictor scores the original images (no pruning) and its
    binary cross-entropy target is the atypicality of those same images' tokens."""
    import torch.nn.functional as F
    torch.manual_seed(0)
    m = build_method("sparsecontrast:keep_ratio=0.25:rarity_weight=1", VIT4, 32)  # the default frame
    assert m.config.rarity_frame == "original"
    x = torch.randn(8, 1, 32, 32)
    logits = m._sparse.saliency_logits(x)
    assert logits.shape == (8, 16)
    torch.testing.assert_close(logits, m.pruned(x, 1.0).logits)       # the same scores as a pass
    out = m.training_step(x, torch.Generator().manual_seed(0))
    twin = build_method("sparsecontrast:keep_ratio=0.25:rarity_weight=1:rarity_frame=view", VIT4, 32)
    expected = F.binary_cross_entropy_with_logits(logits, twin.rarity_target(x))
    torch.testing.assert_close(out["rarity"], expected.detach())
    m.zero_grad()
    F.binary_cross_entropy_with_logits(m._sparse.saliency_logits(x), twin.rarity_target(x)).backward()
    assert m.predictor.mlp[0].weight.grad.abs().sum() > 0
