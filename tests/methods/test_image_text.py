import numpy as np
import pytest
import torch

from cxrcl.data.phantom import make_phantom
from cxrcl.errors import CxrclError
from cxrcl.losses.info_nce import info_nce
from cxrcl.methods.image_text import image_text_nce, report_text
from cxrcl.methods.registry import build_method
from tests.conftest import TINY_VIT


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return build_method("clip", TINY_VIT, 32)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp("ph") / "phantom", n=32, size=32)


def test_plain_loss_is_info_nce_exactly():
    torch.manual_seed(0)
    a, b = torch.randn(12, 8, requires_grad=True), torch.randn(12, 8)
    t = torch.tensor(0.07)
    torch.testing.assert_close(image_text_nce(a, b, t), info_nce(a, b, t), rtol=0, atol=0)


def test_skipped_pairs_are_the_loss_of_the_rest_and_weights_scale_the_logits():
    torch.manual_seed(1)
    a, b = torch.randn(10, 8), torch.randn(10, 8)
    valid = torch.tensor([True] * 7 + [False] * 3)
    valid = valid[torch.randperm(10)]
    torch.testing.assert_close(image_text_nce(a, b, 0.1, valid=valid), info_nce(a[valid], b[valid], 0.1))
    # a constant per-image logit weight c is InfoNCE at temperature t / c
    w = torch.full((10,), 2.5)
    torch.testing.assert_close(image_text_nce(a, b, 0.1, image_weight=w), info_nce(a, b, 0.1 / 2.5))
    # an image's weight follows the image: it scales row i one way and column i the other
    w = torch.rand(10) + 0.5
    an, bn = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
    logits = an @ bn.T / 0.1 * w[:, None]
    ref = 0.5 * (torch.nn.functional.cross_entropy(logits, torch.arange(10))
                 + torch.nn.functional.cross_entropy(logits.T, torch.arange(10)))
    torch.testing.assert_close(image_text_nce(a, b, 0.1, image_weight=w), ref)
    # nothing valid: a zero loss that still back-propagates
    x = torch.randn(4, 8, requires_grad=True)
    loss = image_text_nce(x, torch.randn(4, 8), 0.1, valid=torch.zeros(4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0 and x.grad is not None
    with pytest.raises(ValueError, match="own pair"):
        image_text_nce(a, b, 0.1, exclude=torch.eye(10, dtype=torch.bool))


def test_report_text_keeps_findings_and_impression():
    raw = "INDICATION: cough. FINDINGS: Small left effusion. IMPRESSION: Effusion."
    assert report_text(raw) == "Small left effusion. Effusion."
    assert report_text("free text note") == "free text note"
    assert report_text(raw, sections=False) == raw


def test_interface_shapes_norms_scale_and_batch_reports(clip, phantom):
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        zi, zt = clip.encode_image(x), clip.encode_text(["There is effusion.", "no effusion.", "a", "b"])
    assert zi.shape == zt.shape == (4, clip.config.proj_dim)
    torch.testing.assert_close(zi.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(zt.norm(dim=-1), torch.ones(4))
    assert float(clip.logit_scale.detach()) == pytest.approx(1 / 0.07, rel=1e-5)
    assert clip.encoder is clip.backbone
    rows = np.arange(4)
    clip.set_batch_rows(rows, phantom)
    texts, valid = clip.batch_reports(4)
    assert valid.all() and all("INDICATION" not in t and t for t in texts)
    out = clip.training_step(x, torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["reports"] == 1.0


def test_text_layers_frozen_as_configured():
    top3 = build_method("clip", TINY_VIT, 32)
    trainable = {n.split(".")[2] for n, p in top3.text.model.named_parameters()
                 if p.requires_grad and n.startswith("encoder.layer.")}
    assert trainable == {"3", "4", "5"}
    assert not any(p.requires_grad for n, p in top3.text.model.named_parameters()
                   if not n.startswith("encoder.layer."))
    frozen = build_method("clip:text_trainable_layers=0", TINY_VIT, 32)
    assert not any(p.requires_grad for p in frozen.text.model.parameters())
    everything = build_method("clip:text_trainable_layers=-1", TINY_VIT, 32)
    grads = {n: p.requires_grad for n, p in everything.text.model.named_parameters()}
    # all but the unused BERT pooler (a trainable parameter without a gradient stops DDP)
    assert all(v != n.startswith("pooler.") for n, v in grads.items())


def test_a_data_set_without_reports_is_one_error(clip, tiny_ds):
    clip.set_batch_rows(np.arange(4), tiny_ds)
    with pytest.raises(CxrclError, match="has no 'report' text column.*image-only method"):
        clip.training_step(torch.randn(4, 1, 32, 32), torch.Generator())


def _ddp_worker(rank, world, port, a, b, valid, targets, w, out):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    n = a.shape[0] // world
    sl = slice(rank * n, (rank + 1) * n)
    al, bl = a[sl].clone().requires_grad_(True), b[sl].clone().requires_grad_(True)
    wl = w[sl].clone().requires_grad_(True)
    loss = image_text_nce(al, bl, 0.1, valid=valid[sl], targets=targets[sl], image_weight=wl)
    loss.backward()  # DDP averages gradients over ranks: do the same by hand
    out[rank] = {"loss": loss.item(), "ga": al.grad / world, "gb": bl.grad / world, "gw": wl.grad / world}
    dist.destroy_process_group()


def test_two_processes_equal_one_process_with_skipped_pairs_targets_and_weights():
    """Ranks with different numbers of valid pairs still give the gradient of the whole batch."""
    import socket

    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    valid = torch.tensor([True, False, False, True, True, True, True, True])  # 2 vs 4 valid
    targets = torch.eye(8)
    targets[3, [3, 6]] = 0.5  # a soft positive across ranks
    w = torch.rand(8, generator=g) + 0.5
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, port, a, b, valid, targets, w, out), nprocs=2, join=True)
    aa, bb, ww = (t.clone().requires_grad_(True) for t in (a, b, w))
    full = image_text_nce(aa, bb, 0.1, valid=valid, targets=targets, image_weight=ww)
    full.backward()
    assert abs((out[0]["loss"] + out[1]["loss"]) / 2 - full.item()) < 1e-5
    for key, ref in (("ga", aa.grad), ("gb", bb.grad), ("gw", ww.grad)):
        torch.testing.assert_close(torch.cat([out[0][key], out[1][key]]), ref, atol=1e-6, rtol=1e-5)
