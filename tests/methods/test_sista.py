"""SISTA: false negatives (soft/remove) against CLIP, the running mean, the sparse gate, the CLI."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cxrcl.cli import main
from cxrcl.data.normalize import to_model_input
from cxrcl.data.phantom import make_phantom
from cxrcl.errors import CxrclError
from cxrcl.methods.registry import build_method
from cxrcl.text.similarity import label_vectors
from cxrcl.training.checkpoint import model_file
from cxrcl.training.fit import pretrain
from tests.conftest import TINY_VIT
from tests.methods.image_text_runs import FAST, pretrain_logs


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp("ph") / "phantom", n=96, size=64)


def _pair(spec):
    """A SISTA model and a CLIP model holding the same weights (eval: no dropout). The CLIP model
    keeps repeated reports as negatives (dedupe_texts=false): plain CLIP, which SISTA reduces to."""
    torch.manual_seed(0)
    sista = build_method(spec, TINY_VIT, 32).eval()
    clip = build_method("clip:dedupe_texts=false", TINY_VIT, 32).eval()
    missing, unexpected = clip.load_state_dict(sista.state_dict(), strict=False)
    assert not missing and all(k.split(".")[0] in ("word_q", "patch_k", "patch_v", "gate_q", "gate_k",
                                                    "gate_out", "sim_ema", "sim_updates") for k in unexpected)
    return sista, clip


@pytest.mark.parametrize("mode", ["soft", "remove"])
def test_instance_loss_is_clips_when_no_pair_passes_the_threshold(phantom, mode):
    sista, clip = _pair(f"sista:false_negatives={mode}:similarity_threshold=1.01")
    rows = np.array([3, 3, 5, 7, 9, 11, 12, 14])  # a repeated row: an identical report
    x = to_model_input(phantom.images[rows], 32)
    for m in (sista, clip):
        m.set_batch_rows(rows, phantom)
    with torch.no_grad():
        texts, valid = sista.batch_reports(len(rows))
        zi, _ = sista.image_features(x)
        zt, _ = sista.text_features(texts)
        inst, logs = sista.instance_loss(zi, zt, texts, valid)
        ref, _ = clip.global_loss(x)
    assert float(logs["false_negatives"]) == 0
    torch.testing.assert_close(inst, ref, rtol=0, atol=0)
    # a lower threshold finds similar (not identical) reports and the loss changes; in eval mode
    # the running mean is not updated (o = 0: S' is the raw cosine)
    lower = build_method(f"sista:false_negatives={mode}:similarity_threshold=0.8", TINY_VIT, 32).eval()
    lower.load_state_dict(sista.state_dict())
    with torch.no_grad():
        inst2, logs2 = lower.instance_loss(zi, zt, texts, valid)
    assert float(logs2["false_negatives"]) > 0.25 and abs(float(inst2) - float(ref)) > 1e-4
    if mode == "remove":
        assert inst2 < ref  # fewer negatives in every softmax


def test_soft_targets_and_removal_follow_the_normalised_similarity():
    torch.manual_seed(0)
    m = build_method("sista:similarity=labels:similarity_threshold=0.9", TINY_VIT, 32)
    texts = ["No acute findings.", "Normal chest. No acute findings.", "Large left pleural effusion.",
             "No acute findings."]
    valid = torch.ones(4, dtype=torch.bool)
    s, pos, own = m.false_negative_mask(texts, valid)
    # label vectors: the three normal reports are identical, the effusion one is not
    assert pos.tolist() == [[True, True, False, True], [True, True, False, True],
                            [False, False, True, False], [True, True, False, True]]
    o = float(m.running_mean_value())
    assert m.sim_updates.item() == 1 and 0 < o < 1
    torch.testing.assert_close(s.diagonal(), torch.ones(4))
    # the EMA is bias-corrected: after one batch o is that batch's mean off-diagonal similarity
    e = torch.nn.functional.normalize(torch.from_numpy(label_vectors(texts)), dim=-1)
    sim = e @ e.T
    assert o == pytest.approx(float(sim[~torch.eye(4, dtype=torch.bool)].mean()), rel=1e-5)
    m.eval()  # eval: the running mean is not updated
    m.false_negative_mask(texts, valid)
    assert m.sim_updates.item() == 1
    # empty reports are never positives of anything
    s, pos, own = m.false_negative_mask(texts, torch.tensor([True, False, True, True]))
    assert not pos[[0, 2, 3], 1].any() and pos[1].tolist() == [False, True, False, False]


def test_column_similarity_uses_the_data_sets_labels(phantom, tiny_ds):
    m = build_method("sista:similarity=columns:similarity_threshold=0.99", TINY_VIT, 32).eval()
    rows = np.arange(12)
    m.set_batch_rows(rows, phantom)
    texts, valid = m.batch_reports(len(rows))
    s, pos, own = m.false_negative_mask(texts, valid)
    lab = phantom.labels(phantom.label_names, rows)
    same = (lab[:, None, :] == lab[None, :, :]).all(-1)
    assert pos.numpy().tolist() == same.tolist()  # identical label sets, and only those
    m.set_batch_rows(rows, tiny_ds.__class__(root=tiny_ds.root, images=tiny_ds.images,
                                             meta=tiny_ds.meta, info={**tiny_ds.info, "label_names": []}))
    with pytest.raises(CxrclError, match="needs label columns"):
        m.column_vectors(len(rows), "cpu")


def test_gate_reaches_the_configured_density_and_losses_stay_finite(phantom):
    torch.manual_seed(0)
    m = build_method("sista:text_trainable_layers=0:text_max_length=32:similarity=labels:gate_density=0.2",
                     TINY_VIT, 32)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    rows, rng = phantom.indices("train"), np.random.default_rng(0)
    means = []
    for step in range(20):
        b = np.sort(rng.choice(rows, 8, replace=False))
        m.set_batch_rows(b, phantom)
        out = m.training_step(to_model_input(phantom.images[b], 32), torch.Generator().manual_seed(step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        assert all(torch.isfinite(torch.as_tensor(v)) for v in out.values())
        means.append(float(out["gate_mean"]))
    assert means[0] > 0.4  # starts near sigmoid(0) = 0.5
    assert abs(np.mean(means[-4:]) - 0.2) < 0.05, means
    assert m.word_q.weight.grad is not None and m.gate_out.weight.grad.abs().sum() > 0


def test_bad_settings_are_refused():
    for spec, key in [("sista:false_negatives=drop", "false_negatives"), ("sista:gate_density=1.0", "gate_density"),
                      ("sista:similarity=minilm", "similarity")]:
        with pytest.raises(CxrclError, match=key):
            build_method(spec, TINY_VIT, 32)


@pytest.mark.slow
def test_cli_loss_falls_on_the_phantom(phantom, tmp_path):
    logs = pretrain_logs("sista", phantom.root, tmp_path / "run")
    first = np.mean([r["instance_loss"] for r in logs[:5]])
    last = np.mean([r["instance_loss"] for r in logs[-5:]])
    assert last < 0.9 * first, (first, last)
    assert np.mean([r["loss"] for r in logs[-5:]]) < np.mean([r["loss"] for r in logs[:5]])


def test_resume_is_exact_with_the_running_mean(phantom, tmp_path):
    spec = f"sista:{FAST}:similarity=labels"
    train = dict(steps=4, batch_size=8, log_every=1, checkpoint_every=100, progress=False)
    full, part = tmp_path / "full", tmp_path / "part"
    pretrain(spec, phantom.root, full, backbone=TINY_VIT, image_size=32, train_overrides=train)
    pretrain(spec, phantom.root, part, backbone=TINY_VIT, image_size=32, train_overrides=train, stop_after=2)
    pretrain(spec, phantom.root, part, resume=True)
    a, b = load_file(str(model_file(full))), load_file(str(model_file(part)))
    assert int(a["sim_updates"]) == 4 and float(a["sim_ema"]) > 0
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    la = [json.loads(line)["loss"] for line in open(full / "metrics.jsonl")]
    lb = [json.loads(line)["loss"] for line in open(part / "metrics.jsonl")]
    assert la == lb and len(la) == 4


def test_a_data_set_without_reports_is_one_line(tiny_ds, tmp_path, capsys):
    code = main(["pretrain", f"sista:{FAST}:similarity=labels", "--data", str(tiny_ds.root), "--out",
                 str(tmp_path / "r"), "--backbone", TINY_VIT, "--image-size", "32", "--steps", "1",
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "has no 'report' text column" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
