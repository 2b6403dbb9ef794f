"""``cxrcl text pretrain``: a byte-level BPE tokenizer and a small transformer trained from scratch
with masked-language modelling (MLM) on a corpus of reports.

What the literature does: BERT-style MLM (Devlin et al. 2019) on radiology text is how CXR-BERT
and the text towers of ConVIRT/GLoRIA/MaCo start. Our choices (small, CPU-cheap):

- Corpus: findings + impression of each report (:func:`cxrcl.text.reports.report_body`),
  cleaned (``XXXX`` kept). Duplicate texts are kept once. 5% of the texts (by a seeded shuffle)
  are held out to report a validation MLM loss.
- Tokenizer: HF ``tokenizers`` byte-level BPE (vocabulary ``vocab_size``, default 4,000) with
  special tokens ``<s> </s> <pad> <unk> <mask>`` and ``XXXX`` added as one token.
- Model: ``transformers.BertForMaskedLM`` from a config (default 3 layers, width 128, 4 heads,
  MLP 512, texts cut at 96 tokens), trained for 300 steps with AdamW (lr 5e-4, warm-up 5% then
  linear decay), batch 32, 15% masking (80/10/10, ``DataCollatorForLanguageModeling``); the
  vocabulary head is applied to the masked positions only (same loss, cheaper on CPU).
- Output folder (``RUN``, new or empty): ``config.json`` + ``model.safetensors`` (the
  BertForMaskedLM; ``AutoModel`` loads its encoder), the tokenizer files, and
  ``text_pretrain.json`` (settings, vocabulary size, the loss every ``log_every`` steps, and the
  validation loss before and after). ``bpe:RUN`` loads it (:mod:`cxrcl.text.encoders`).
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch

from cxrcl.errors import CxrclError
from cxrcl.text.reports import PLACEHOLDER, clean_report, read_reports, report_body

SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def corpus(source: str | Path, column: str | None = None) -> list[str]:
    """Cleaned, de-duplicated report bodies of ``source`` (any input of :func:`read_reports`)."""
    reports = read_reports(source, column=column)
    seen, out = set(), []
    for row in reports.to_dict("records"):
        text = clean_report(report_body(row))
        if text and text not in seen:
            seen.add(text)
            out.append(text)
    if len(out) < 20:
        raise CxrclError(f"{source} holds {len(out)} distinct reports; text pre-training needs at least 20")
    return out


def train_tokenizer(texts: list[str], vocab_size: int = 4000):
    """A byte-level BPE tokenizer (HF ``tokenizers``) wrapped as a transformers fast tokenizer."""
    from tokenizers import AddedToken, ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL,
                            show_progress=False)
    bpe.add_tokens([AddedToken(PLACEHOLDER, lstrip=True)])  # " XXXX" -> one token
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", bpe.token_to_id("<s>")),
                                              ("</s>", bpe.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                   cls_token="<s>", sep_token="</s>")


def _masked_loss(model, batch) -> torch.Tensor:
    """MLM cross-entropy with the vocabulary head applied to the masked positions only (the
    same loss as ``BertForMaskedLM(labels=...)``, several times cheaper on CPU)."""
    hidden = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    picked = batch["labels"] != -100
    logits = model.cls(hidden[picked])
    return torch.nn.functional.cross_entropy(logits, batch["labels"][picked])


def _mlm_loss(model, collator, tokenizer, texts: list[str], max_length: int) -> float:
    model.eval()
    gen = torch.Generator().manual_seed(0)
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            enc = tokenizer(texts[i:i + 64], truncation=True, max_length=max_length)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            batch = collator([{"input_ids": ids} for ids in enc["input_ids"]])
            loss = _masked_loss(model, batch)
            total += float(loss) * len(enc["input_ids"])
            n += len(enc["input_ids"])
    model.train()
    return total / max(n, 1)


def pretrain_text(source: str | Path, out: str | Path, steps: int = 300, batch_size: int = 32,
                  vocab_size: int = 4000, layers: int = 3, width: int = 128, heads: int = 4,
                  max_length: int = 96, lr: float = 5e-4, seed: int = 0, log_every: int = 20,
                  column: str | None = None, progress: bool = False) -> dict:
    """Train the tokenizer and the MLM model on ``source``; write the run to ``out`` (see the
    module docstring). Returns the ``text_pretrain.json`` record."""
    from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CxrclError(f"{out} exists and is not an empty folder: cxrcl never overwrites a run; "
                         "pass a new --out")
    if steps < 1 or batch_size < 1 or width % heads:
        raise CxrclError("--steps and --batch-size must be positive and --width a multiple of --heads")
    random.seed(seed)
    torch.manual_seed(seed)
    texts = corpus(source, column=column)
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_val = max(10, len(texts) // 20)
    val = [texts[i] for i in order[:n_val]]
    train = [texts[i] for i in order[n_val:]]
    t0 = time.perf_counter()
    tokenizer = train_tokenizer(train, vocab_size=vocab_size)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=width, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * width,
                        max_position_embeddings=max_length + 2, pad_token_id=tokenizer.pad_token_id,
                        type_vocab_size=1)
    model = BertForMaskedLM(config)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    val_before = _mlm_loss(model, collator, tokenizer, val, max_length)
    encoded = tokenizer(train, truncation=True, max_length=max_length)["input_ids"]
    rng = random.Random(seed)
    losses, window = [], []
    model.train()
    for step in range(steps):
        idx = rng.sample(range(len(encoded)), min(batch_size, len(encoded)))
        batch = collator([{"input_ids": encoded[i]} for i in idx])
        loss = _masked_loss(model, batch)
        if not math.isfinite(loss.item()):
            raise CxrclError(f"the MLM loss became {loss.item()} at step {step}: lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        window.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            losses.append({"step": step + 1, "loss": round(sum(window) / len(window), 4)})
            window = []
            if progress:
                print(f"step {step + 1}/{steps} MLM loss {losses[-1]['loss']:.3f}", flush=True)
    val_after = _mlm_loss(model, collator, tokenizer, val, max_length)
    seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    record = {
        "source": str(source), "n_texts": len(texts), "n_train": len(train), "n_val": len(val),
        "vocab_size": len(tokenizer), "placeholder_token_id": tokenizer.convert_tokens_to_ids(PLACEHOLDER),
        "settings": {"steps": steps, "batch_size": batch_size, "layers": layers, "width": width,
                     "heads": heads, "max_length": max_length, "lr": lr, "seed": seed,
                     "mlm_probability": 0.15},
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_loss": losses, "val_loss_before": round(val_before, 4),
        "val_loss_after": round(val_after, 4), "seconds": round(seconds, 1),
    }
    (out / "text_pretrain.json").write_text(json.dumps(record, indent=1))
    return record


__all__ = ["corpus", "pretrain_text", "train_tokenizer"]
