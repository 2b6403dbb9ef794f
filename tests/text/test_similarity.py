"""Report-report similarity (:mod:`cxrcl.text.similarity`) and ``cxrcl text similar``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrcl.cli import main
from cxrcl.text.labeller import LABELS
from cxrcl.text.similarity import cosine_matrix, embed_texts, label_vectors, nearest

REPORTS = pd.DataFrame({
    "id": ["a", "b", "c", "d", "e"],
    "findings": ["Large right pleural effusion.", "The lungs are clear.", "Small left pleural effusion.",
                 "The lungs are clear.", "Cannot exclude pneumonia."],
    "impression": ["", "No acute disease.", "", "No acute disease.", ""],
})


def test_label_vectors():
    v = label_vectors(["Small left pleural effusion.", "Cannot exclude pneumonia.", "No effusion."])
    assert v.shape == (3, len(LABELS))
    assert v[0, LABELS.index("effusion")] == 1.0
    assert v[1, LABELS.index("pneumonia")] == 0.5
    assert v[2, LABELS.index("effusion")] == 0.0 and v[2, LABELS.index("no_finding")] == 1.0


def test_cosine_of_normalised_embeddings():
    e = embed_texts(["Small left pleural effusion.", "Large right pleural effusion.", "Normal chest."],
                    "labels")
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-6)
    s = cosine_matrix(e, e)
    assert s[0, 1] == 1.0 and s[0, 2] == 0.0


def test_nearest_by_labels_dedupes_texts():
    top = nearest("Moderate pleural effusion on the left.", REPORTS, method="labels", k=3)
    assert set(top["id"][:2]) == {"a", "c"}
    assert list(top["rank"]) == [1, 2, 3]
    assert top["text"].is_unique  # b and d have the same text: shown once
    assert top["similarity"].is_monotonic_decreasing


def test_nearest_by_minilm():
    top = nearest("Normal chest, no acute cardiopulmonary process.", REPORTS, method="minilm", k=1)
    assert top.loc[0, "id"] in {"b", "d"}


def test_similar_cli(tmp_path, capsys):
    csv = tmp_path / "r.csv"
    REPORTS.assign(report=REPORTS["findings"]).to_csv(csv, index=False)
    assert main(["text", "similar", "--reports", str(csv), "--query", "right pleural effusion",
                 "--method", "labels", "--k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("1. 1.000")
    assert main(["text", "similar", "--reports", str(csv), "--query", " "]) == 2
    assert "--query is empty" in capsys.readouterr().err
