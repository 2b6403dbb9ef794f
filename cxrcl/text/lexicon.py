"""Our finding lexicon: regular expressions (lower-case text) that mention each finding.

Names are the canonical labels of :mod:`cxrcl.data.labels`. The lists were written from the
Open-i reports' own phrasing and tuned on the *dev* half only (see docs/text.md); the held-out
half was scored once the lists were fixed.

- :data:`FINDINGS`: finding -> patterns whose match is a mention of the finding. A pattern may
  hold a named group ``neg`` (``heart is not enlarged``): when it matched, the mention is negative
  whatever the context says.
- :data:`NORMAL_STATEMENTS`: finding -> patterns that deny the finding by saying the structure is
  normal (``heart size is normal``); they give a negative mention.
- :data:`OTHER_ABNORMAL`: abnormalities outside the labelled findings (degenerative spine,
  tortuous aorta, surgical clips ...). A positive mention of one of them, or of any finding, makes
  ``no_finding`` 0; ``no_finding`` is 1 only when nothing abnormal is asserted.
"""

from __future__ import annotations

_SIZE = r"(?:(?:mildly|moderately|markedly|slightly|severely|minimally|massively|again|still|stably|borderline|significantly|now|also)\s+)*"
_HEART = (r"(?:heart(?:\s+size)?|cardiac\s+(?:silhouette|shadow|size|contours?)|"
          r"cardio\s*-?\s*mediastinal\s+(?:silhouette|contours?|shadow)|cardiac\s+and\s+mediastinal\s+"
          r"(?:silhouettes?|contours?))")
_BE = r"(?:\s+(?:is|are|appears?|remains?|was|seems?|has\s+become|continues\s+to\s+be))?"

FINDINGS: dict[str, list[str]] = {
    "cardiomegaly": [
        r"cardiomegaly",
        r"cardiac\s+enlargement",
        r"enlarge(?:d|ment\s+of\s+the)\s+(?:\w+\s+){0,2}" + _HEART,
        _HEART + _BE + r"\s+(?P<neg>not\s+)?" + _SIZE + r"(?:enlarged|prominent|large|increased)",
        r"borderline\s+(?:enlarged\s+)?(?:heart|cardiac)\s+(?:size|silhouette)",
        r"(?:heart|cardiac)\s+(?:size|silhouette)\s+(?:is\s+)?borderline",
    ],
    "effusion": [
        r"(?<!pericardial\s)effusions?",
        r"pleural\s+fluid",
    ],
    "pneumothorax": [
        r"(?:hydro|hemo)?pneumothora(?:x|ces)",
    ],
    "atelectasis": [
        r"atelecta\w*",
        r"(?:lobar|lobe|lung)\s+collapse",
        r"collapse\s+of\s+the\s+(?:\w+\s+){0,3}(?:lobe|lung)",
    ],
    "lung_opacity": [
        r"opacit(?:y|ies)",
        r"opacification",
        r"opacified",
        r"air\s*-?\s*space\s+(?:disease|process|consolidation|opacit\w+)",
    ],
    "nodule": [
        r"(?<!calcified\s)nodules?",
    ],
    "edema": [
        r"(?<!soft\stissue\s)o?edema",
    ],
    "pneumonia": [
        r"(?:broncho)?pneumonias?",
    ],
    "consolidation": [r"consolidat\w*"],
    "infiltration": [r"infiltrat\w*"],
    "emphysema": [r"emphysema\w*", r"copd", r"chronic\s+obstructive"],
    "fibrosis": [r"fibros\w*", r"fibrotic"],
    "mass": [r"mass(?:es)?\b(?!\s*-?\s*like)"],
    "hernia": [r"hernia\w*"],
    "fracture": [r"fractur\w*"],
    "pleural_thickening": [r"pleural\s+thickening", r"thickening\s+of\s+the\s+(?:\w+\s+)?pleura"],
    "enlarged_cardiomediastinum": [
        r"(?:widened|enlarged)\s+(?:superior\s+)?mediastin\w*",
        r"mediastin\w*\s+(?:is\s+)?(?:widened|widening|enlarged)",
    ],
    "support_devices": [
        r"pacemaker", r"pacer", r"catheter", r"(?:endotracheal|chest|nasogastric|tracheostomy|feeding)\s+tube",
        r"port-?a-?cath", r"(?:central|venous)\s+line", r"picc", r"stents?", r"defibrillator", r"icd\b",
        r"sternotomy\s+wires?", r"wires?", r"leads?\b(?!\s+to)", r"drain\b", r"valve\s+replacement",
    ],
    "calcified_granuloma": [r"calcified\s+(?:granuloma|nodule)s?", r"granulomas?\s+(?:is|are)\s+calcified"],
    "granuloma": [r"granulom\w*"],
}

NORMAL_STATEMENTS: dict[str, list[str]] = {
    "cardiomegaly": [
        _HEART + r"(?:\s+(?:is|are|appears?|remains?))?\s+(?:\w+\s+){0,2}?(?:normal|within\s+normal|"
        r"unremarkable|stable|upper\s+normal)",
        r"normal\s+(?:\w+\s+){0,2}?(?:heart|cardiac|cardiomediastinal)\s+(?:size|silhouette|contours?)",
        r"(?:heart|cardiac)\s+(?:size|silhouette)\s+(?:and\s+\w+\s+)?(?:is\s+|are\s+)?within\s+normal",
        r"(?:heart\s+size|cardiac\s+silhouette|cardiac\s+size)\s+(?:is\s+)?(?:at\s+the\s+)?upper\s+limits?\s+of\s+normal",
    ],
}

OTHER_ABNORMAL: list[str] = [
    r"degenerat\w+", r"spondyl\w+", r"osteophyt\w+", r"scoliosis", r"kyphos\w+", r"kyphotic",
    r"tortuous", r"tortuosity", r"ectatic", r"aneurysm\w*", r"atheroscleros\w+", r"atherosclerotic",
    r"(?<!non)calcifi\w+", r"calcinosis", r"scar\w*", r"cicatri\w+",
    r"hyperinfla\w+", r"hyperexpan\w+", r"hyperlucen\w+", r"flattening\s+of\s+the\s+(?:\w+\s+)?diaphragm",
    r"flattened\s+(?:\w+\s+)?(?:hemi)?diaphragms?", r"bullae?", r"bullous", r"blebs?",
    r"eventration", r"elevat\w+\s+(?:of\s+the\s+)?(?:\w+\s+)?(?:hemi)?diaphragm",
    r"(?:hemi)?diaphragm\w*\s+(?:is\s+|are\s+)?elevated",
    r"blunt\w*", r"(?:surgical|vascular|postoperative)\s+clips?", r"clips", r"sutures?",
    r"(?:status\s+)?post\s+\w+", r"postsurgical", r"postoperative", r"prosthe\w+", r"arthroplast\w+",
    r"hardware", r"fusion", r"deformit\w+", r"compression", r"wedg\w+", r"osteopen\w+", r"osteoporo\w+",
    r"lucen\w+", r"densit(?:y|ies)", r"cavit\w+", r"lesions?", r"metasta\w+", r"tumou?r",
    r"(?:low|decreased|diminished|reduced)\s+lung\s+volumes?", r"hypoinflat\w+", r"hypoexpan\w+",
    r"(?:increased|prominent|coarse|accentuated|chronic)\s+(?:\w+\s+)?(?:interstitial|bronchovascular|lung)\s+markings",
    r"interstitial\s+(?:markings|disease|lung\s+disease|pattern|prominence)",
    r"congesti\w+", r"vascular\s+(?:prominence|engorgement|cephalization)", r"cephalization",
    r"(?:pulmonary|vascular)\s+(?:\w+\s+)?(?:hypertension|prominence)", r"heart\s+failure", r"chf",
    r"(?:hilar|mediastinal)\s+(?:\w+\s+)?(?:adenopathy|lymphadenopathy|prominence|fullness|enlargement)",
    r"lymphadenopathy", r"adenopathy", r"thickening", r"infectio\w+", r"tuberculosis", r"foreign\s+bod\w+",
    r"shift", r"volume\s+loss", r"tip", r"device", r"svc", r"piercings?", r"nipple\s+rings?", r"curvature", r"spur\w*", r"hyperdisten\w+",
    r"lung\s+volumes\s+(?:are\s+)?(?:\w+\s+)?(?:low|decreased|reduced|diminished)",
    r"(?:bi)?hilar\s+(?:\w+\s+)?(?:prominence|fullness|enlargement)", r"prominen\w+\s+(?:\w+\s+)?hil\w+", r"bronchiectasis", r"dilat\w+", r"unfold\w+", r"tube", r"(?<!no\s)dextro\w+",
    r"pneumoperitoneum", r"free\s+air", r"subcutaneous\s+(?:emphysema|air)", r"cyst\w*",
    r"abnormalit\w+", r"disease",
]

__all__ = ["FINDINGS", "NORMAL_STATEMENTS", "OTHER_ABNORMAL"]
