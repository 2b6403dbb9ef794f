"""Text encoders (:mod:`cxrcl.text.encoders`): documented shapes for bpe, minilm and hf, offline
loading of a local model, one-sentence errors, and the scratch MLM pre-training."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from cxrcl.cli import main
from cxrcl.errors import CxrclError
from cxrcl.text.encoders import build_text_encoder
from cxrcl.text.pretrain import pretrain_text

TEXTS = ["No acute cardiopulmonary abnormality.",
         "Stable left XXXX. Moderate right pleural effusion with adjacent atelectasis."]


def check_shapes(enc, texts=TEXTS):
    out = enc.encode(texts)
    b, t = out.mask.shape
    assert b == len(texts) and out.mask.dtype == torch.bool
    assert out.sentence.shape == (b, enc.dim)
    assert out.tokens.shape == (b, t, enc.dim)
    assert out.mask.sum(1).min() >= 1 and out.mask[:, 0].all()
    assert not out.mask.all()  # texts of different lengths -> padding in the shorter one
    # padding does not change a text's embedding: alone == in a padded batch
    alone = enc.encode([texts[0]]).sentence[0]
    torch.testing.assert_close(alone, out.sentence[0], atol=1e-4, rtol=1e-4)
    return out


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A tiny BertModel + WordPiece tokenizer made here and saved to a folder (no download)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny_bert")
    words = sorted({w.strip(".,").lower() for t in TEXTS for w in t.split()})
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *words]))
    tok = BertTokenizerFast(vocab_file=str(path / "vocab.txt"))
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, max_position_embeddings=64))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_hf_loads_local_tiny_model_offline(tiny_bert, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = build_text_encoder(f"hf:{tiny_bert}")
    assert enc.dim == 16
    check_shapes(enc)
    cls = build_text_encoder(f"hf:{tiny_bert}", pooling="cls").encode(TEXTS)
    assert cls.sentence.shape == (2, 16)


def test_minilm_shapes_and_meaning():
    enc = build_text_encoder("minilm")
    out = check_shapes(enc)
    assert enc.dim == 384
    torch.testing.assert_close(out.sentence.norm(dim=1), torch.ones(2))
    e = enc.encode(["No acute cardiopulmonary abnormality.", "Normal chest.",
                    "Large right pleural effusion."]).sentence
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])


@pytest.mark.parametrize(("name", "match"), [
    ("hf:/no/such/model", "does not exist"),
    ("hf:someone/not-in-cache-model", "local Hugging Face cache"),
    ("bpe", "bpe:RUN"),
    ("word2vec", "unknown text encoder"),
])
def test_missing_model_is_one_sentence(name, match, tmp_path):
    with pytest.raises(CxrclError, match=match):
        build_text_encoder(name)


def test_missing_model_cli(tmp_path, capsys):
    csv = tmp_path / "r.csv"
    pd.DataFrame({"report": ["No effusion.", "Small effusion."]}).to_csv(csv, index=False)
    assert main(["text", "similar", "--reports", str(csv), "--query", "effusion",
                 "--method", f"hf:{tmp_path / 'missing'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
    assert main(["text", "similar", "--reports", str(csv), "--query", "x",
                 "--method", f"bpe:{tmp_path}"]) == 2
    assert "text pretrain" in capsys.readouterr().err


def _corpus(path, n=80):
    sides = ["left", "right", "bilateral"]
    findings = ["pleural effusion", "atelectasis", "pneumothorax", "airspace disease", "nodule"]
    rows = []
    for i in range(n):
        f, s = findings[i % 5], sides[(i // 5) % 3]
        rows.append(f"FINDINGS: Stable XXXX. There is a small {s} {f}. The heart is normal in size. "
                    f"IMPRESSION: {s.capitalize()} {f}, case {i}.")
    pd.DataFrame({"report": rows}).to_csv(path, index=False)
    return path


def test_bpe_pretrain_loss_falls_and_encoder_shapes(tmp_path):
    corpus = _corpus(tmp_path / "reports.csv")
    run = tmp_path / "run"
    rec = pretrain_text(corpus, run, steps=60, batch_size=16, vocab_size=300, layers=1, width=32,
                        heads=2, lr=3e-3, log_every=10)
    losses = [r["loss"] for r in rec["train_loss"]]
    assert losses[-1] < losses[0] - 0.5, losses
    assert rec["val_loss_after"] < rec["val_loss_before"]
    assert json.loads((run / "text_pretrain.json").read_text())["vocab_size"] == rec["vocab_size"]
    enc = build_text_encoder(f"bpe:{run}")
    assert enc.dim == 32
    check_shapes(enc)
    long = enc.encode(["There is a small left effusion. " * 60]).tokens  # cut at the model's positions
    assert long.shape[1] <= enc.model.config.max_position_embeddings
    # the placeholder is one token, with or without a space before it
    ids = enc.tokenizer("left XXXX. XXXX")["input_ids"]
    assert ids.count(rec["placeholder_token_id"]) == 2
    with pytest.raises(CxrclError, match="never overwrites"):
        pretrain_text(corpus, run, steps=1)


def test_pretrain_cli_refuses_bad_input(tmp_path, capsys):
    assert main(["text", "pretrain", "--reports", str(tmp_path / "none"), "--out",
                 str(tmp_path / "run")]) == 2
    assert "does not exist" in capsys.readouterr().err
