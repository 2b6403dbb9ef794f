"""An image-text run seen by zero-shot and retrieval: images and texts -> unit embeddings.

Any object with ``encode_image(x [B, 1, S, S]) -> [B, D]`` and ``encode_text(list[str]) -> [B, D]``
(the interface of :mod:`cxrcl.methods.image_text`: CLIP, SISTA, MaCo) can be wrapped; a run
directory is loaded with :func:`load_image_text_model`. Images go through the canonical transform
(:func:`cxrcl.data.normalize.to_model_input`) at the run's image size, in eval mode, without
gradients. Embeddings are L2-normalised again here (a no-op for a model that already does it),
so every score downstream is a cosine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import yaml

from cxrcl.data.normalize import to_model_input
from cxrcl.errors import CxrclError

IMAGE_TEXT_HINT = "zero-shot and retrieval need an image-text run (cxrcl pretrain clip, sista or maco)"


def is_image_text(model) -> bool:
    return callable(getattr(model, "encode_image", None)) and callable(getattr(model, "encode_text", None))


def _unit(x: torch.Tensor) -> np.ndarray:
    x = x.detach().float().cpu()
    return torch.nn.functional.normalize(x, dim=-1).numpy().astype(np.float32)


class ImageTextModel:
    """A trained image-text method in eval mode; :meth:`images` / :meth:`texts` give unit vectors."""

    def __init__(self, model, image_size: int, name: str = "model", device=None, batch_size: int = 256,
                 train_splits: Sequence[str] = ("train",)):
        if not is_image_text(model):
            raise CxrclError(f"{name} has no encode_image/encode_text: {IMAGE_TEXT_HINT}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval() if isinstance(model, torch.nn.Module) else model
        self.image_size, self.name, self.batch_size = int(image_size), str(name), int(batch_size)
        self.train_splits = tuple(train_splits)

    @property
    def text_column(self) -> str:
        """The data set column the model pre-trained on (its config's ``text_column``; else report)."""
        return str(getattr(getattr(self.model, "config", None), "text_column", "report"))

    def report_texts(self, raw: Sequence[str]) -> list[str]:
        """Reports as the model read them in pre-training: :func:`cxrcl.methods.image_text.report_text`
        (findings + impression when present) for a model whose config has ``report_sections``,
        else unchanged."""
        sections = getattr(getattr(self.model, "config", None), "report_sections", None)
        if sections is None:
            return [str(t) for t in raw]
        from cxrcl.methods.image_text import report_text

        return [report_text(t, bool(sections)) for t in raw]

    @property
    def sentence_pool(self) -> str:
        """The pool the run drew its training sentences from (its ``text_sentence_pool``; else all)."""
        return str(getattr(getattr(self.model, "config", None), "text_sentence_pool", "all"))

    def report_embeddings(self, reports: Sequence[str], unit: str = "whole") -> np.ndarray:
        """Unit embeddings of reports (already cut by :meth:`report_texts`).

        ``unit="whole"``: each report in one pass, as a whole-report run trained on it.
        ``unit="sentences"``: the normalised mean of the unit embeddings of its sentences in the
        run's training pool (:func:`cxrcl.methods.image_text.sentence_pool`): the text a run that
        draws sentences (``text_sentences`` > 0, ConVIRT's sampling) saw in training. Our choice,
        like the prompt ensembling of zero-shot; a report with no sentence keeps its whole text."""
        from cxrcl.evaluation.retrieval import check_report_embedding

        check_report_embedding(unit)
        if unit == "whole":
            return self.texts(reports)
        from cxrcl.methods.image_text import sentence_pool
        from cxrcl.text.reports import split_sentences

        pieces = [sentence_pool(split_sentences(t), self.sentence_pool) or [t] for t in reports]
        flat = [s for p in pieces for s in p]
        uniq = {s: i for i, s in enumerate(dict.fromkeys(flat))}
        emb = self.texts(list(uniq))
        out = np.stack([emb[[uniq[s] for s in p]].mean(axis=0) for p in pieces]) if pieces else emb
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    @property
    def logit_scale(self) -> float:
        """The model's image-text logit scale as a multiplier (``exp`` of a stored log scale when
        the model says so through ``logit_scale_is_log``; else the value itself; 1 if absent)."""
        s = getattr(self.model, "logit_scale", None)
        if s is None:
            return 1.0
        s = s() if callable(s) and not isinstance(s, torch.Tensor) else s
        v = float(s.detach()) if isinstance(s, torch.Tensor) else float(s)
        return math.exp(v) if getattr(self.model, "logit_scale_is_log", False) else v

    @torch.no_grad()
    def images(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W] -> float32 [N, D], unit rows."""
        out = []
        for a in range(0, len(images), self.batch_size):
            x = to_model_input(np.asarray(images[a:a + self.batch_size]), self.image_size, self.device)
            out.append(_unit(self.model.encode_image(x)))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> np.ndarray:
        """list of str -> float32 [N, D], unit rows."""
        texts = [str(t) for t in texts]
        out = [_unit(self.model.encode_text(texts[a:a + self.batch_size]))
               for a in range(0, len(texts), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def load_image_text_model(run: str | Path, device=None) -> ImageTextModel:
    """A ``cxrcl pretrain`` run of an image-text method -> :class:`ImageTextModel`.

    ``pixels``, ``random:BACKBONE`` and runs of image-only methods (spcl, simclr, mae, ...) are a
    one-sentence :class:`CxrclError`.
    """
    spec = str(run)
    if spec == "pixels" or spec.startswith("random:"):
        raise CxrclError(f"--run {spec} has no text encoder: {IMAGE_TEXT_HINT}")
    root = Path(spec)
    cfg_path = root / "config.yaml"
    if not cfg_path.is_file():
        raise CxrclError(f"{root} is not a run directory (no config.yaml): {IMAGE_TEXT_HINT}")
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    from cxrcl.methods.registry import build_method, method_class
    from cxrcl.specs import parse_spec
    from cxrcl.training.checkpoint import load_weights, model_file

    name = parse_spec(str(cfg.get("method", "?")))[0]
    cls = method_class(name)
    if not (callable(getattr(cls, "encode_image", None)) and callable(getattr(cls, "encode_text", None))):
        raise CxrclError(f"{root} was pre-trained with {name}, which learns no text encoder: {IMAGE_TEXT_HINT}")
    size = int(cfg["image_size"])
    method = build_method(cfg["method"], cfg["backbone"], size, base=cfg.get("method_config"))
    load_weights(method, model_file(root))
    splits = (cfg.get("train") or {}).get("splits") or ("train",)
    return ImageTextModel(method, size, str(root), device, train_splits=tuple(splits))
