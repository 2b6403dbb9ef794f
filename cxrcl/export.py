"""``cxrcl export``: a run's encoder as a timm checkpoint (safetensors) or an ONNX graph.

    timm:  timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=FILE), **KWARGS)
    onnx:  onnxruntime.InferenceSession(FILE).run(["features"], {"images": x})

Both take what cxrcl's encoders take: float32 images [N, 1, S, S], grey, normalised as
``(uint8 / 255 - 0.5) / 0.25`` (:mod:`cxrcl.data.normalize`), and return the pooled features
[N, D] that ``cxrcl embed`` and the probes use. Every export is checked before it is reported:
the file is loaded back the way a user loads it (timm's ``create_model`` with the file overlay;
an onnxruntime session on a different batch size than the one traced) and its features must
match cxrcl's within ``TOLERANCE`` (relative to the features' scale), else the file is removed
and the export fails in one sentence.

Our choices: KWARGS are the run's backbone overrides plus ``in_chans=1, num_classes=0`` and, for
a ViT, ``img_size`` (the run's size) and the pooling cxrcl uses (``global_pool="avg",
fc_norm=False``: the mean of the patch tokens after the final norm; ``pool=token`` runs export
``global_pool="token"``). ViT and ResNet families round-trip through timm; a family whose timm
head differs from cxrcl's pooling (ConvNeXt's head norm) is refused for timm (use onnx). The
ONNX graph is exported by ``torch.onnx.export`` (dynamo) with a dynamic batch dimension, opset
``OPSET``. An existing ``--out`` is never replaced unless ``force`` is given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from cxrcl.encoders import RANDOM_PREFIX, load_encoder
from cxrcl.errors import CxrclError
from cxrcl.io import atomic_write, check_writable_file
from cxrcl.specs import parse_spec

__all__ = ["FORMATS", "export", "timm_kwargs"]

FORMATS = ("timm", "onnx")
TOLERANCE = 1e-4
OPSET = 18
INPUT = "float32 [N, 1, S, S], grey, normalised as (uint8 / 255 - 0.5) / 0.25"


def _backbone_spec(run: str) -> str:
    if run.startswith(RANDOM_PREFIX):
        return run[len(RANDOM_PREFIX):]
    cfg = yaml.safe_load((Path(run) / "config.yaml").read_text())
    return str(cfg["backbone"])


def timm_kwargs(spec: str, image_size: int, is_vit: bool) -> tuple[str, dict]:
    """timm name and ``create_model`` kwargs that rebuild cxrcl's backbone with its pooling."""
    name, overrides = parse_spec(spec)
    pool = overrides.pop("pool", "avg")
    kwargs = {"in_chans": 1, "num_classes": 0, **overrides}
    if is_vit:
        kwargs.update(img_size=int(image_size), global_pool="avg" if pool == "avg" else "token",
                      fc_norm=False)
    return name, kwargs


def load_line(name: str, kwargs: dict, file: str | os.PathLike) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return (f"timm.create_model({name!r}, pretrained=True, "
            f"pretrained_cfg_overlay=dict(file={str(file)!r}), {args})")


def _check_out(out: str | os.PathLike, force: bool) -> Path:
    path = check_writable_file(out, what="--out")
    if path.exists() and not path.is_file():
        raise CxrclError(f"--out {path} is not a regular file; name a new file")
    if path.exists() and not force:
        raise CxrclError(f"--out {path} already exists and is left alone: choose another path, or "
                         "pass --force to replace it")
    return path


def _close(ref: np.ndarray, got: np.ndarray) -> float:
    """Max abs difference relative to the reference's scale (1 + max |ref|)."""
    return float(np.abs(ref - got).max() / (1.0 + np.abs(ref).max()))


def _probe_input(size: int, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, size, size, generator=g)


def export(run: str | os.PathLike, fmt: str, out: str | os.PathLike, *,
           image_size: int | None = None, force: bool = False) -> dict:
    """Export the encoder of ``run`` (a run directory or ``random:BACKBONE`` with
    ``image_size``) to ``out`` in ``fmt`` ("timm" or "onnx"); returns what was written, how to
    load it (``load``) and the checked difference (``max_rel_diff``)."""
    if fmt not in FORMATS:
        raise CxrclError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    path = _check_out(out, force)
    run = str(run)
    if run == "pixels":
        raise CxrclError("--run pixels has no encoder to export; pass a run directory")
    if run.startswith(RANDOM_PREFIX) and image_size is None:
        raise CxrclError(f"--run {run} needs --image-size (the input size of the exported encoder)")
    enc = load_encoder(run, image_size, device="cpu")
    backbone = enc.backbone.eval()
    writer = _export_timm if fmt == "timm" else _export_onnx
    info = writer(run, backbone, enc.image_size, path)
    return {"format": fmt, "file": str(path), "run": run, "image_size": enc.image_size,
            "feature_dim": int(enc.dim), "input": INPUT, **info}


def _export_timm(run: str, backbone: nn.Module, size: int, path: Path) -> dict:
    import timm
    from safetensors.torch import save_file

    from cxrcl.models.backbones import CNNBackbone, ViTBackbone

    is_vit = isinstance(backbone, ViTBackbone)
    name, kwargs = timm_kwargs(_backbone_spec(run), size, is_vit)
    model = timm.create_model(name, **kwargs)
    # wrap the fresh timm model like cxrcl does, so the run's weights land under timm's names
    wrapper = ViTBackbone(model, name, pool=backbone.pool_type) if is_vit else CNNBackbone(model, name, size)
    wrapper.load_state_dict(backbone.state_dict())
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "cxrcl_run": run, "timm_name": name, "timm_kwargs": json.dumps(kwargs),
            "input": INPUT}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))
    line = load_line(name, kwargs, path)
    try:
        loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                   **kwargs).eval()
        x = _probe_input(size, 3)
        with torch.no_grad():
            diff = _close(backbone(x).numpy(), loaded(x).numpy())
    except Exception as e:  # noqa: BLE001 - any failure to load back means the export is unusable
        path.unlink(missing_ok=True)
        raise CxrclError(f"the timm export of {name} could not be loaded back ({type(e).__name__}: "
                         f"{e}); use --format onnx") from None
    if not diff <= TOLERANCE:
        path.unlink(missing_ok=True)
        raise CxrclError(f"timm's {name} does not reproduce cxrcl's features (relative difference "
                         f"{diff:.2g}: its head pools differently); use --format onnx")
    return {"timm_name": name, "timm_kwargs": kwargs, "load": line, "max_rel_diff": diff}


class _Features(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)


def _export_onnx(run: str, backbone: nn.Module, size: int, path: Path) -> dict:
    try:
        import onnx  # noqa: F401 - torch.onnx needs it
        import onnxruntime as ort
        import onnxscript  # noqa: F401 - the dynamo exporter needs it
    except ImportError as e:
        raise CxrclError(f"--format onnx needs the export extra ({e.name} is missing): "
                         "pip install 'cxrcl[export]'") from None
    module = _Features(backbone).eval()
    x = _probe_input(size, 2)
    batch = torch.export.Dim("batch", min=1)

    def write(tmp: Path) -> None:
        torch.onnx.export(module, (x,), str(tmp), input_names=["images"], output_names=["features"],
                          dynamo=True, dynamic_shapes={"images": {0: batch}}, opset_version=OPSET,
                          external_data=False, verbose=False)

    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        atomic_write(path, write)
    x3 = _probe_input(size, 3, seed=1)  # another batch size than the traced one
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(["features"], {"images": x3.numpy()})[0]
    except Exception as e:  # noqa: BLE001
        path.unlink(missing_ok=True)
        raise CxrclError(f"onnxruntime could not run the exported graph ({type(e).__name__}: {e})") from None
    with torch.no_grad():
        diff = _close(backbone(x3).numpy(), got)
    if not diff <= TOLERANCE:
        path.unlink(missing_ok=True)
        raise CxrclError(f"the ONNX graph's features differ from cxrcl's (relative difference {diff:.2g})")
    line = (f"onnxruntime.InferenceSession({str(path)!r}).run(['features'], "
            "{'images': x})[0]  # x: " + INPUT)
    return {"opset": OPSET, "load": line, "max_rel_diff": diff, "onnxruntime": ort.__version__}
