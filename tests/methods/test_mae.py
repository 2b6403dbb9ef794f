"""MAE baseline: masking, the visible-only encoder, the decoder and loss, the CLI run."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode

from cxrcl.cli import main
from cxrcl.errors import CxrclError
from cxrcl.methods.registry import build_method
from cxrcl.models.mae_decoder import patch_targets, random_mask, visible_map
from cxrcl.training.checkpoint import model_file
from cxrcl.training.fit import pretrain
from tests.conftest import TINY_VIT


def flops(fn) -> int:
    with FlopCounterMode(display=False) as c:
        fn()
    return c.get_total_flops()


def test_random_mask_splits_every_token_once_and_follows_the_generator():
    vis, msk = random_mask(5, 64, 0.5, torch.Generator().manual_seed(1))
    assert vis.shape == (5, 32) and msk.shape == (5, 32)
    assert torch.equal(torch.cat([vis, msk], 1).sort(1).values, torch.arange(64).expand(5, -1))
    again, _ = random_mask(5, 64, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(vis, again)
    assert random_mask(2, 49, 0.75, torch.Generator())[0].shape == (2, 12)  # round(0.75 * 49) = 37 masked
    m = visible_map(vis, 64)
    assert torch.equal(m.sum(1), torch.full((5,), 32.0)) and torch.equal(m.gather(1, msk), torch.zeros(5, 32))


@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_masked_patches_never_reach_the_encoder(ratio):
    """The first block's input holds the visible tokens (+ the class token) only, and rewriting
    the pixels of the masked patches changes nothing the encoder computes."""
    torch.manual_seed(0)
    m = build_method(f"mae:mask_ratio={ratio}", TINY_VIT, 32).eval()
    n, prefix = m.backbone.num_tokens, m.backbone.vit.num_prefix_tokens
    seen = []
    m.backbone.vit.blocks[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    x = torch.randn(3, 1, 32, 32)
    m.training_step(x, torch.Generator().manual_seed(7))
    vis, msk = random_mask(3, n, ratio, torch.Generator().manual_seed(7))
    assert seen == [(3, vis.shape[1] + prefix, m.backbone.dim)] and vis.shape[1] == n - round(ratio * n)
    # pixels of the masked patches: the encoder's output on the visible tokens is unchanged
    p, g = m.backbone.patch_size, m.backbone.grid[1]
    y = x.clone()
    for b in range(3):
        for t in msk[b].tolist():
            r, c = divmod(t, g)
            y[b, :, r * p:(r + 1) * p, c * p:(c + 1) * p] = 9.0
    enc_x = m.backbone.encode(m.backbone.embed(x), vis).tokens
    enc_y = m.backbone.encode(m.backbone.embed(y), vis).tokens
    assert torch.equal(enc_x, enc_y)
    assert not torch.allclose(m.backbone.encode(m.backbone.embed(y)).tokens, m.backbone.encode(m.backbone.embed(x)).tokens)


def test_training_flops_shrink_with_the_mask_ratio():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 32, 32)
    counts = [flops(lambda r=r: build_method(f"mae:mask_ratio={r}", TINY_VIT, 32).training_step(
        x, torch.Generator().manual_seed(0))) for r in (0.25, 0.5, 0.75)]
    assert counts[0] > counts[1] > counts[2], counts


def test_loss_is_the_mse_on_normalised_masked_patches():
    torch.manual_seed(0)
    m = build_method("mae", TINY_VIT, 32)
    x = torch.randn(2, 1, 32, 32)
    _, msk = random_mask(2, m.backbone.num_tokens, 0.5, torch.Generator().manual_seed(3))
    target = patch_targets(x, msk, m.backbone.patch_size)
    assert target.shape == (2, msk.shape[1], 64)
    torch.testing.assert_close(target.mean(-1), torch.zeros(2, msk.shape[1]), atol=1e-5, rtol=0)
    # the patch of token t is the image square at (t // grid, t % grid)
    t = int(msk[0, 0])
    r, c = divmod(t, m.backbone.grid[1])
    raw = patch_targets(x, msk, 8, norm_pix=False)[0, 0]
    assert torch.equal(raw, x[0, 0, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8].flatten())
    with torch.no_grad():
        loss = m.training_step(x, torch.Generator().manual_seed(3))["loss"]
    assert loss > 0.5  # untrained: about the variance of the normalised target (1)


def test_cnn_sees_only_the_visible_pixels_and_bad_settings_are_clear_errors():
    """A CNN encoder (our SparK-style extension): changing the masked pixels changes nothing the
    encoder outputs, changing a visible one does."""
    from cxrcl.models.masked_encoding import encode_visible

    torch.manual_seed(0)
    m = build_method("mae:cnn_mask_patch=16", "resnet18", 64).eval()
    for mod in m.backbone.modules():  # timm zero-initialises each block's last norm: undo, so
        if isinstance(mod, torch.nn.BatchNorm2d):  # every pixel reaches the output, as after training
            torch.nn.init.ones_(mod.weight)
    assert (m.grid.side, m.grid.patch_size, m.decoder.num_patches) == (4, 16, 16)
    x = torch.randn(2, 1, 64, 64)
    visible, masked = random_mask(2, 16, 0.5, torch.Generator().manual_seed(0))
    enc, feats = encode_visible(m.backbone, x, visible, m.grid)
    assert feats.shape == (2, 8, m.backbone.dim)
    y = x.clone()
    for b in range(2):
        for t in masked[b].tolist():
            r, c = divmod(t, 4)
            y[b, :, 16 * r:16 * r + 16, 16 * c:16 * c + 16] = torch.randn(16, 16) * 9
    enc2, feats2 = encode_visible(m.backbone, y, visible, m.grid)
    torch.testing.assert_close(feats2, feats)
    torch.testing.assert_close(m.backbone.pool(enc2), m.backbone.pool(enc))
    r, c = divmod(visible[0, 0].item(), 4)
    y[0, :, 16 * r + 3, 16 * c + 3] += 5.0
    assert not torch.allclose(m.backbone.pool(encode_visible(m.backbone, y, visible, m.grid)[0]),
                              m.backbone.pool(enc))
    with pytest.raises(CxrclError, match="cnn_mask_patch=12 must divide the image size 64"):
        build_method("mae:cnn_mask_patch=12", "resnet18", 64)
    with pytest.raises(CxrclError, match="mask_ratio"):
        build_method("mae:mask_ratio=1.0", TINY_VIT, 32)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("ph") / "phantom"
    assert main(["data", "phantom", str(root), "--n", "96", "--size", "64"]) == 0
    return root


def test_cli_loss_falls_on_the_phantom_with_a_vit_and_a_cnn(phantom, tmp_path):
    run = tmp_path / "run"
    code = main(["pretrain", "mae", "--data", str(phantom), "--out", str(run), "--backbone", TINY_VIT,
                 "--image-size", "64", "--steps", "40", "--batch-size", "16", "--lr", "0.001",
                 "--log-every", "5", "--no-progress"])
    assert code == 0
    losses = [json.loads(line)["loss"] for line in open(run / "metrics.jsonl")]
    assert losses[-1] < 0.97 * losses[0], losses
    cnn = tmp_path / "cnn"
    code = main(["pretrain", "mae", "--data", str(phantom), "--out", str(cnn), "--backbone", "resnet18",
                 "--image-size", "64", "--steps", "40", "--batch-size", "16", "--lr", "0.001",
                 "--log-every", "5", "--no-progress"])
    assert code == 0
    losses = [json.loads(line)["loss"] for line in open(cnn / "metrics.jsonl")]
    assert losses[-1] < 0.97 * losses[0], losses


def test_resume_is_exact_and_config_is_honoured(phantom, tmp_path):
    spec = "mae:mask_ratio=0.75:decoder_depth=1"
    train = dict(steps=6, batch_size=8, log_every=1, checkpoint_every=100, progress=False)
    full, part = tmp_path / "full", tmp_path / "part"
    pretrain(spec, phantom, full, backbone=TINY_VIT, image_size=32, train_overrides=train)
    pretrain(spec, phantom, part, backbone=TINY_VIT, image_size=32, train_overrides=train, stop_after=3)
    pretrain(spec, phantom, part, resume=True)
    a, b = load_file(str(model_file(full))), load_file(str(model_file(part)))
    assert any("decoder.decoder.blocks.0" in k for k in a)
    assert not any("decoder.decoder.blocks.1" in k for k in a)  # decoder_depth=1 honoured
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    la = [json.loads(line)["loss"] for line in open(full / "metrics.jsonl")]
    lb = [json.loads(line)["loss"] for line in open(part / "metrics.jsonl")]
    assert la == lb and len(la) == 6
