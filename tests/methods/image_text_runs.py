"""Shared by the CLIP and SISTA tests: a short `cxrcl pretrain` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from cxrcl.cli import main
from tests.conftest import TINY_VIT

FAST = "text_trainable_layers=0:text_max_length=64"  # frozen, short text side: fast on CPU


def pretrain_logs(method: str, data: Path, run: Path, steps: int = 24) -> list[dict]:
    """Pre-train ``METHOD:FAST`` on ``data`` (32 px, batch 12, lr 1e-3, every step logged) and
    return the metrics.jsonl records."""
    code = main(["pretrain", f"{method}:{FAST}", "--data", str(data), "--out", str(run),
                 "--backbone", TINY_VIT, "--image-size", "32", "--steps", str(steps), "--batch-size", "12",
                 "--lr", "0.001", "--log-every", "1", "--no-progress"])
    assert code == 0
    return [json.loads(line) for line in open(run / "metrics.jsonl")]
