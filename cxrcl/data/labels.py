"""One label vocabulary across data sets (torchxrayvision's ``.pathologies`` pattern).

Every source maps its findings onto these canonical names (the ``label_<name>`` columns of a
prepared data set) where the findings coincide, keeps a data-set-specific name otherwise, and
leaves a label empty (NaN) where the data set says nothing about it.
"""

from __future__ import annotations

import re

# canonical name -> display name (torchxrayvision's spelling where it has one)
VOCABULARY: dict[str, str] = {
    "atelectasis": "Atelectasis",
    "consolidation": "Consolidation",
    "infiltration": "Infiltration",
    "pneumothorax": "Pneumothorax",
    "edema": "Edema",
    "emphysema": "Emphysema",
    "fibrosis": "Fibrosis",
    "effusion": "Effusion",
    "pneumonia": "Pneumonia",
    "pleural_thickening": "Pleural_Thickening",
    "cardiomegaly": "Cardiomegaly",
    "nodule": "Nodule",
    "mass": "Mass",
    "hernia": "Hernia",
    "lung_lesion": "Lung Lesion",
    "fracture": "Fracture",
    "lung_opacity": "Lung Opacity",
    "enlarged_cardiomediastinum": "Enlarged Cardiomediastinum",
    "support_devices": "Support Devices",
    "pleural_other": "Pleural Other",
    "no_finding": "No Finding",
    "covid19": "COVID-19",
    "tuberculosis": "Tuberculosis",
    "granuloma": "Granuloma",
    "calcified_granuloma": "Calcified Granuloma",
}

# publisher spellings -> canonical name (sources add their own on top of these)
ALIASES: dict[str, str] = {
    "pleural effusion": "effusion",
    "pleural_effusion": "effusion",
    "pleural thickening": "pleural_thickening",
    "covid-19": "covid19",
    "covid": "covid19",
    "tb": "tuberculosis",
    "normal": "no_finding",
    "infiltrate": "infiltration",
    "pulmonary atelectasis": "atelectasis",
    "pulmonary edema": "edema",
    "pulmonary emphysema": "emphysema",
    "fractures, bone": "fracture",
    "hernia, hiatal": "hernia",
}


def canonical(name: str) -> str:
    """Publisher spelling -> canonical label name (``"Pleural Effusion"`` -> ``"effusion"``);
    names outside the vocabulary become lower snake case."""
    key = name.strip().lower()
    if key in ALIASES:
        return ALIASES[key]
    snake = re.sub(r"[^a-z0-9]+", "_", key).strip("_")
    return ALIASES.get(snake, snake)
