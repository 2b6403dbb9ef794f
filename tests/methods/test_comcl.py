"""CoMCL: the healthy-only queue, same-lesion positives, self-paced weights, exact resume."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from cxrcl.data.regions import coverage
from cxrcl.errors import CxrclError
from cxrcl.losses.info_nce import info_nce
from cxrcl.losses.self_paced import self_paced_lambda, self_paced_weights, weighted_mean
from cxrcl.methods import comcl as comcl_module
from cxrcl.methods.registry import build_method
from cxrcl.training.checkpoint import model_file
from cxrcl.training.fit import pretrain
from tests.conftest import TINY_VIT

B, S = 8, 32


def lesion_data(seed=0):
    """Noise images, each with one bright 8x8 'lesion' at a random place; its mask."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(40, 90, (B, S, S), dtype=np.uint8)
    masks = np.zeros((B, S, S), np.uint8)
    for i in range(B):
        y, x = rng.integers(0, S - 8, 2)
        imgs[i, y:y + 8, x:x + 8] = 240
        masks[i, y:y + 8, x:x + 8] = 1
    ds = SimpleNamespace(masks=masks, meta=pd.DataFrame({"has_mask": np.ones(B, int)}), root="mem")
    x = torch.from_numpy(imgs).float().div(255).sub(0.5).div(0.25)[:, None]
    return x, ds


def comcl(spec=""):
    torch.manual_seed(0)
    m = build_method(f"comcl:queue_size=64:patch_fraction=0.5{spec}", TINY_VIT, S)
    return m


def test_healthy_patches_avoid_the_lesion_and_the_queue_holds_only_their_keys():
    x, ds = lesion_data()
    m = comcl()
    m.set_batch_rows(np.arange(B), ds)
    v = m.views(x, torch.Generator().manual_seed(5))
    lesion_map = torch.from_numpy(ds.masks).float()
    cov = coverage(lesion_map, int(v["patch_cells"]))
    rows = torch.arange(B)
    assert (cov[rows, v["healthy_cells"][:, 0], v["healthy_cells"][:, 1]] == 0).all()
    assert (cov[rows, v["lesion_cells"][:, 0], v["lesion_cells"][:, 1]] > 0).all()
    with torch.no_grad():
        healthy = F.normalize(m.key_encoder(torch.cat([v["healthy"], v["healthy_low"]])), dim=1)
        lesion = F.normalize(m.key_encoder(torch.cat([v["lesion"], v["lesion_low"]])), dim=1)
    m.training_step(x, torch.Generator().manual_seed(5))  # same draws; momentum no-op at step 0
    queued = m.queue.keys[:2 * B]
    torch.testing.assert_close(queued, healthy, rtol=1e-4, atol=1e-5)
    assert int(m.queue.ptr) == 2 * B
    # no queued key is a lesion key
    assert (torch.cdist(queued, lesion).min(1).values > 1e-3).all()


def test_positives_are_the_same_lesion_across_quality(monkeypatch):
    x, ds = lesion_data(1)
    m = comcl(":augment=false")
    m.set_batch_rows(np.arange(B), ds)
    monkeypatch.setattr(comcl_module, "degrade_batch", lambda src, levels, g, p: src)
    v = m.views(x, torch.Generator().manual_seed(2))
    # with quality loss switched off, the low-quality view IS the clean lesion crop
    torch.testing.assert_close(v["lesion_low"], v["lesion"])
    torch.testing.assert_close(v["image_low"], v["image"])
    # and the pair shares its lesion: both views are bright where the lesion is
    assert (v["lesion"].amax(dim=(1, 2, 3)) > 1.5).all()  # 240 -> 1.76; background < -0.5


def test_degraded_views_come_from_the_shared_definition():
    x, ds = lesion_data(2)
    m = comcl(":augment=false:degrade_levels=3,3:single_component_p=0")
    m.set_batch_rows(np.arange(B), ds)
    v = m.views(x, torch.Generator().manual_seed(0))
    diff = (v["lesion_low"] - v["lesion"]).abs().mean(dim=(1, 2, 3))
    assert (diff > 0.05).all()


def test_mask_regions_need_the_rows():
    x, _ = lesion_data()
    with pytest.raises(CxrclError, match="set_batch_rows"):
        comcl().training_step(x, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("form", ["hard", "linear"])
def test_self_paced_weights_follow_their_form_and_schedule(form):
    losses = torch.tensor([0.5, 1.0, 2.0, 3.0, 5.0])
    lam = self_paced_lambda(0.5, 2.0, 4.0)
    assert lam == 3.0 and self_paced_lambda(0.0, 2.0, 4.0) == 2.0 and self_paced_lambda(1.0, 2.0, 4.0) == 4.0
    w = self_paced_weights(losses, lam, form)
    expected = (losses < lam).float() if form == "hard" else (1 - losses / lam).clamp_min(0)
    torch.testing.assert_close(w, expected)
    # harder samples enter as lambda grows
    admitted = [int((self_paced_weights(losses, self_paced_lambda(p, 2.0, 6.0), form) > 0).sum())
                for p in (0.0, 0.5, 1.0)]
    assert admitted == sorted(admitted) and admitted[0] < admitted[-1]
    # in the method: lambda_t is a function of the step (in units of ln(1 + queue size))
    m = comcl(f":self_paced={form}:sp_lambda=1,3")
    for step, frac in [(0, 1.0), (50, 2.0), (99, 1 + 2 * 0.99)]:
        m.set_progress(step, 100)
        assert m.lambda_now() == pytest.approx(frac * math.log(65))


def test_infinite_lambda_is_plain_info_nce():
    torch.manual_seed(0)
    q, k, losses = torch.randn(6, 16), torch.randn(6, 16), torch.rand(6) * 5
    for form in ("hard", "linear"):
        w = self_paced_weights(losses, math.inf, form)
        assert weighted_mean(losses, w) == pytest.approx(losses.mean().item())
        assert info_nce(q, k, 0.1, weights=w).item() == pytest.approx(info_nce(q, k, 0.1).item())
    x, ds = lesion_data()
    for base in ({"sp_lambda": [math.inf, math.inf]}, {"self_paced": "none"}):
        torch.manual_seed(0)
        m = build_method("comcl:queue_size=64", TINY_VIT, S, base=base)
        m.set_batch_rows(np.arange(B), ds)
        out = m.training_step(x, torch.Generator().manual_seed(0))
        assert math.isinf(m.lambda_now())
        assert out["loss"].item() == pytest.approx(out["unweighted_loss"].item())
        assert out["sp_admitted"].item() == 1.0


def test_queue_loss_is_lightly_moco_loss():
    """The per-sample loss against the queue, averaged, is lightly's NTXentLoss with a bank."""
    from lightly.loss import NTXentLoss

    m = comcl()
    torch.manual_seed(1)
    q, k = torch.randn(B, 128), torch.randn(B, 128)
    ours = m.per_sample_loss(q, k).mean()
    ref = NTXentLoss(temperature=0.07, memory_bank_size=(64, 128))
    ref.memory_bank.bank.copy_(m.queue.keys)
    torch.testing.assert_close(ours, ref(q, k), rtol=1e-5, atol=1e-5)


def test_loss_and_queue_resume_exactly(tiny_ds, tmp_path):
    """--stop-after + --resume gives the same losses, weights and queue as one run."""
    spec = "comcl:regions=none:queue_size=48:momentum_schedule=cosine:momentum=0.9"
    train = dict(steps=6, batch_size=8, log_every=1, checkpoint_every=100, progress=False)
    full, part = tmp_path / "full", tmp_path / "part"
    pretrain(spec, tiny_ds.root, full, backbone=TINY_VIT, image_size=32, train_overrides=train)
    pretrain(spec, tiny_ds.root, part, backbone=TINY_VIT, image_size=32, train_overrides=train,
             stop_after=3)
    pretrain(spec, tiny_ds.root, part, resume=True)
    a, b = load_file(str(model_file(full))), load_file(str(model_file(part)))
    assert a.keys() == b.keys() and "queue.keys" in a
    assert int(a["queue.ptr"]) == (6 * 2 * 8) % 48
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_regions_mask_on_a_data_set_without_masks_is_refused_before_anything_is_written(tiny_ds, tmp_path):
    assert not (tiny_ds.root / "masks.npy").exists()
    out = tmp_path / "run"
    with pytest.raises(CxrclError, match="no masks.npy.*regions=none"):
        pretrain("comcl", tiny_ds.root, out, backbone=TINY_VIT, image_size=32,
                 train_overrides=dict(steps=1, batch_size=8, progress=False))
    assert not out.exists()
