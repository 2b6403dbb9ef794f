"""MaCo: correlation weight, its reduction to InfoNCE, visible-only encoding, lambda, CLI runs."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from cxrcl.cli import main
from cxrcl.data.normalize import to_model_input
from cxrcl.data.prepared import PreparedDataset
from cxrcl.errors import CxrclError
from cxrcl.evaluation.efficiency import benchmark
from cxrcl.losses.info_nce import info_nce
from cxrcl.methods.registry import build_method
from cxrcl.models.mae_decoder import random_mask, visible_map
from cxrcl.training.checkpoint import model_file
from cxrcl.training.fit import pretrain
from tests.conftest import TINY_VIT

FAST_TEXT = "text_trainable_layers=0:text_max_length=48"  # frozen MiniLM: no text backward on CPU


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("ph") / "phantom"
    assert main(["data", "phantom", str(root), "--n", "96", "--size", "64"]) == 0
    return root


@pytest.fixture(scope="module")
def maco():
    torch.manual_seed(0)
    return build_method(f"maco:{FAST_TEXT}", TINY_VIT, 32)


def batch(m, dataset, n=6, size=32):
    rows = dataset.indices("train")[:n]
    m.set_batch_rows(rows, dataset)
    return to_model_input(dataset.images[rows], size)


def test_defaults_follow_the_public_code(maco):
    c = maco.config
    assert (c.mask_ratio, c.lambda_contrastive, c.norm_pix_loss) == (0.5, 0.9, True)
    assert float(maco.logit_scale.detach()) == pytest.approx(1 / 0.03, rel=1e-5)
    assert maco.criterion.log_inv_t.requires_grad  # learnable scale


def test_correlation_weight_starts_at_ln2_for_every_mask(maco):
    for seed in range(3):
        vis, _ = random_mask(5, maco.backbone.num_tokens, 0.5, torch.Generator().manual_seed(seed))
        s = maco.correlation(visible_map(vis, maco.backbone.num_tokens))
        torch.testing.assert_close(s, torch.full((5,), math.log(2)), rtol=0, atol=0)
    assert not maco.correlation.linear.weight.any() and not maco.correlation.linear.bias.any()


def test_constant_weights_give_plain_info_nce(maco, monkeypatch):
    torch.manual_seed(1)
    zi, zt = torch.randn(8, 16), torch.randn(8, 16)
    vis, _ = random_mask(8, maco.backbone.num_tokens, 0.5, torch.Generator().manual_seed(0))
    t = maco.criterion.temperature
    # s = ln 2 for every image (the initial state): InfoNCE at temperature t / ln 2
    con, s = maco.contrastive_loss(zi, zt, vis)
    torch.testing.assert_close(con, info_nce(zi, zt, t / math.log(2)))
    # s = 1 for every image: plain InfoNCE exactly
    monkeypatch.setattr(maco.correlation, "forward", lambda m: torch.ones(m.shape[0]))
    con1, _ = maco.contrastive_loss(zi, zt, vis)
    torch.testing.assert_close(con1, info_nce(zi, zt, t), rtol=0, atol=0)
    monkeypatch.undo()
    # weights that depend on the mask change the loss
    with torch.no_grad():
        maco.correlation.linear.weight.normal_()
    try:
        con2, s2 = maco.contrastive_loss(zi, zt, vis)
        assert s2.std() > 0 and not torch.allclose(con2, con)
    finally:
        with torch.no_grad():
            maco.correlation.linear.weight.zero_()


def test_masked_patches_never_reach_the_encoder_and_evaluation_sees_all(maco, phantom):
    ds = PreparedDataset.open(phantom)
    x = batch(maco, ds)
    seen = []
    hook = maco.backbone.vit.blocks[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[1]))
    try:
        out = maco.training_step(x, torch.Generator().manual_seed(0))
        n, prefix = maco.backbone.num_tokens, maco.backbone.vit.num_prefix_tokens
        assert seen == [n // 2 + prefix]  # ONE encoder pass, on the visible half only
        assert out["reports"] == 1.0 and out["correlation_weight"] == pytest.approx(math.log(2))
        seen.clear()
        with torch.no_grad():
            z = maco.encode_image(x)
        assert seen == [n + prefix] and z.shape == (6, maco.config.proj_dim)
    finally:
        hook.remove()


def test_lambda_is_honoured_and_the_weight_learns(phantom):
    ds = PreparedDataset.open(phantom)
    for lam in (0.25, 0.0):
        torch.manual_seed(0)
        m = build_method(f"maco:{FAST_TEXT}:lambda_contrastive={lam}", TINY_VIT, 32)
        out = m.training_step(batch(m, ds), torch.Generator().manual_seed(0))
        torch.testing.assert_close(out["loss"].detach(), out["reconstruction"] + lam * out["contrastive"])
        out["loss"].backward()
        grad = m.correlation.linear.weight.grad
        if lam == 0:
            assert grad is None or not grad.any()
        else:
            assert grad is not None and grad.abs().sum() > 0
    with pytest.raises(CxrclError, match="lambda_contrastive"):
        build_method("maco:lambda_contrastive=-1", TINY_VIT, 32)


def test_conv_stem_vit_trains_and_its_reconstruction_targets_the_raw_pixels(phantom):
    ds = PreparedDataset.open(phantom)
    torch.manual_seed(0)
    m = build_method(f"maco:{FAST_TEXT}", f"{TINY_VIT}:stem=conv", 32)
    assert m.decoder.pred.out_features == 8 * 8  # one grey channel per 8 px patch
    out = m.training_step(batch(m, ds), torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and m.backbone.vit.patch_embed.proj.to_embed.weight.grad.abs().sum() > 0


def test_cnn_tower_trains_with_its_mask_grid(phantom):
    ds = PreparedDataset.open(phantom)
    torch.manual_seed(0)
    m = build_method(f"maco:{FAST_TEXT}", "resnet18", 32)
    assert m.grid.num_tokens == 16 and m.correlation.linear.in_features == 16  # 8 px patches of 32 px
    out = m.training_step(batch(m, ds), torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["correlation_weight"] == pytest.approx(math.log(2))
    assert m.backbone.stem[0].weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_cli_loss_falls_on_the_phantom_and_resume_is_exact(phantom, tmp_path):
    run = tmp_path / "run"
    code = main(["pretrain", f"maco:{FAST_TEXT}", "--data", str(phantom), "--out", str(run),
                 "--backbone", TINY_VIT, "--image-size", "64", "--steps", "30", "--batch-size", "16",
                 "--lr", "0.0001", "--log-every", "5", "--no-progress"])
    assert code == 0
    logs = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert logs[-1]["loss"] < 0.95 * logs[0]["loss"], [r["loss"] for r in logs]
    assert logs[-1]["contrastive"] < logs[0]["contrastive"]
    assert logs[-1]["reconstruction"] < logs[0]["reconstruction"]
    # --stop-after + --resume replays the same steps exactly
    spec = f"maco:{FAST_TEXT}:mask_ratio=0.75"
    train = dict(steps=4, batch_size=8, log_every=1, checkpoint_every=100, progress=False)
    full, part = tmp_path / "full", tmp_path / "part"
    pretrain(spec, phantom, full, backbone=TINY_VIT, image_size=32, train_overrides=train)
    pretrain(spec, phantom, part, backbone=TINY_VIT, image_size=32, train_overrides=train, stop_after=2)
    pretrain(spec, phantom, part, resume=True)
    a, b = load_file(str(model_file(full))), load_file(str(model_file(part)))
    assert a.keys() == b.keys() and "correlation.linear.weight" in a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    la = [json.loads(line)["loss"] for line in open(full / "metrics.jsonl")]
    assert la == [json.loads(line)["loss"] for line in open(part / "metrics.jsonl")] and len(la) == 4


def test_bench_runs_image_report_methods_and_counts_visible_only_encoding(phantom):
    """`cxrcl bench` gives each method the batch's rows (MaCo reads reports); MAE's forward
    FLOPs fall with the mask ratio because the encoder gets only the visible tokens."""
    specs = ["mae", "mae:mask_ratio=0.75", f"maco:{FAST_TEXT}"]
    b = benchmark(specs, str(phantom), TINY_VIT, image_size=32, batch_size=8, steps=1, warmup=0,
                  measure_memory=False, progress=None)
    g = {s: b["methods"][s]["gflops_per_image"] for s in specs}
    assert 0 < g["mae:mask_ratio=0.75"] < g["mae"] < g[f"maco:{FAST_TEXT}"], g
