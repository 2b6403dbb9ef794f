"""``cxrcl export``: the encoder round-trips through timm and onnxruntime with the same features."""

import numpy as np
import pytest
import timm
import torch
from safetensors import safe_open

from cxrcl.cli import main
from cxrcl.encoders import load_encoder
from cxrcl.errors import CxrclError
from cxrcl.export import export
from cxrcl.training.fit import pretrain
from tests.conftest import TINY_VIT, make_tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    ds = make_tiny(root / "data", n=80, size=32)
    pretrain("simclr", ds.root, root / "run", backbone=TINY_VIT, image_size=32,
             train_overrides={"steps": 2, "batch_size": 16, "progress": False, "lr": 1e-2})
    return ds, root / "run"


def _images(ds, n=5):
    from cxrcl.data.normalize import to_model_input

    return to_model_input(np.asarray(ds.images[:n]), 32)


def test_timm_round_trip(run, tmp_path, capsys):
    ds, rdir = run
    out = tmp_path / "enc.safetensors"
    assert main(["export", "--run", str(rdir), "--format", "timm", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "timm.create_model('vit_tiny_patch16_224', pretrained=True, pretrained_cfg_overlay=" in printed
    kwargs = dict(in_chans=1, num_classes=0, patch_size=8, depth=2, img_size=32, global_pool="avg",
                  fc_norm=False)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(out)), **kwargs).eval()
    ref = load_encoder(rdir, device="cpu")
    x = _images(ds)
    with torch.no_grad():
        got = model(x).numpy()
        fresh = timm.create_model("vit_tiny_patch16_224", **kwargs).eval()(x).numpy()
    want = ref.features(np.asarray(ds.images[:5]))
    assert np.allclose(got, want, atol=1e-5)
    assert not np.allclose(fresh, want, atol=1e-2)  # the weights come from the file
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["timm_name"] == "vit_tiny_patch16_224"


def test_onnx_round_trip_dynamic_batch(run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")
    ds, rdir = run
    out = tmp_path / "enc.onnx"
    assert main(["export", "--run", str(rdir), "--format", "onnx", "--out", str(out)]) == 0
    assert "onnxruntime.InferenceSession" in capsys.readouterr().out
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    want = load_encoder(rdir, device="cpu").features(np.asarray(ds.images[:7]))
    got = sess.run(["features"], {"images": _images(ds, 7).numpy()})[0]
    assert got.shape == (7, 192) and np.allclose(got, want, atol=1e-4)


def test_resnet_timm_export(tmp_path):
    res = export("random:resnet18", "timm", tmp_path / "r.safetensors", image_size=32)
    assert res["timm_kwargs"] == {"in_chans": 1, "num_classes": 0} and res["max_rel_diff"] < 1e-5
    model = timm.create_model("resnet18", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "r.safetensors")),
                              **res["timm_kwargs"]).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), load_encoder("random:resnet18", 32, device="cpu").backbone(x),
                              atol=1e-5)


def test_existing_file_is_left_alone(run, tmp_path, capsys):
    _, rdir = run
    out = tmp_path / "mine.safetensors"
    out.write_text("precious")
    assert main(["export", "--run", str(rdir), "--format", "timm", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err and "Traceback" not in err
    assert out.read_text() == "precious"
    assert main(["export", "--run", str(rdir), "--format", "timm", "--out", str(out), "--force"]) == 0
    assert out.stat().st_size > 1000
    with pytest.raises(CxrclError, match="image-size"):
        export("random:resnet18", "timm", tmp_path / "x.safetensors")
    with pytest.raises(CxrclError, match="no encoder"):
        export("pixels", "onnx", tmp_path / "x.onnx")
