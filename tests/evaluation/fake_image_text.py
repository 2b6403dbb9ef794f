"""A tiny prepared image-report data set and fake image-text models for the zero-shot and
retrieval tests (no training: what the evaluation computes is then known in advance)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxrcl.data.normalize import MEAN, STD
from cxrcl.data.writer import write_prepared

SIZE = 16
FINDINGS = ("nodule", "effusion")  # nodule: bright top-left block; effusion: bright bottom-right


def make_paired_dataset(out, n: int = 120, seed: int = 0, with_text: bool = True):
    """Noise images whose row index is written in pixels (0, 0) and (0, 1); labels nodule and
    effusion visible as bright corner blocks; reports "Case i. There is a nodule. No effusion."."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(40, 90, (n, SIZE, SIZE)).astype(np.uint8)
    lab = {f: rng.random(n) < 0.4 for f in FINDINGS}
    imgs[lab["nodule"], 2:6, 2:6] = 220
    imgs[lab["effusion"], 10:14, 10:14] = 220
    imgs[:, 0, 0], imgs[:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    reports = []
    for i in range(n):
        parts = [f"Case {i}."]
        for f in FINDINGS:
            parts.append(f"There is a {f}." if lab[f][i] else f"No {f}.")
        reports.append(" ".join(parts))
    split = np.array(["train"] * 6 + ["val"] * 2 + ["test"] * 2)[np.arange(n) % 10]
    meta = pd.DataFrame({"id": [f"img{i:04d}" for i in range(n)], "patient_id": [f"p{i:04d}" for i in range(n)],
                         "split": split, **{f"label_{f}": lab[f].astype(int) for f in FINDINGS}})
    if with_text:
        meta["report"] = reports
    return write_prepared(out, imgs, meta, source="test", label_names=list(FINDINGS),
                          text_columns=["report"] if with_text else [])


def _uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x[:, 0] * STD + MEAN) * 255).round()


class FindingModel(nn.Module):
    """Embeds each finding as (present, absent) coordinates; the text side reads negations
    ("no X", "no evidence of X", "There is no X", "the lung is clear.")."""

    logit_scale = 10.0

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        u = _uint8(x)
        e = []
        for block in (u[:, 2:6, 2:6], u[:, 10:14, 10:14]):
            p = (block.mean(dim=(1, 2)) > 150).float()
            e += [p, 1 - p]
        return nn.functional.normalize(torch.stack(e, dim=1), dim=1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), 2 * len(FINDINGS))
        for i, t in enumerate(texts):
            low = t.lower()
            for j, f in enumerate(FINDINGS):
                if "lung is clear" in low or re.search(rf"\bno (?:evidence of )?(?:a )?{f}", low):
                    out[i, 2 * j + 1] = 1
                elif f in low:
                    out[i, 2 * j] = 1
        return nn.functional.normalize(out + 1e-3, dim=1)


class IdModel(nn.Module):
    """Perfect retrieval: the image's row index (pixels (0, 0), (0, 1)) and the report's
    "Case i" give the same one-hot vector."""

    def __init__(self, n: int = 120):
        super().__init__()
        self.n = n

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        u = _uint8(x)
        idx = (u[:, 0, 0] * 256 + u[:, 0, 1]).long()
        return nn.functional.one_hot(idx, self.n).float()

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        idx = torch.tensor([int(re.search(r"Case (\d+)", t).group(1)) for t in texts])
        return nn.functional.one_hot(idx, self.n).float()
