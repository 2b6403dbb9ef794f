"""A negation- and uncertainty-aware rule labeller: report text -> finding labels.

The design follows NegEx / ConText (Chapman et al. 2001, Harkema et al. 2009) and the CheXpert
labeller (Irvin et al. 2019): find mentions with a lexicon (ours, :mod:`cxrcl.text.lexicon`), then
decide each mention's status from trigger phrases whose *scope* covers it. Our choices:

- Text: the findings and impression sections (indication and comparison are not read: "eval for
  pneumonia" is a question, not a finding). Each sentence is lower-cased; a trigger's scope is
  the clause around the mention, which ends at ``but``, ``however``, ``although``, ``except``,
  ``other than``, ``which``, ``there is``, ``is seen``, ``;``, ``:`` or a comma that opens a
  clause with its own verb (``no effusion, the heart is enlarged``).
- Pseudo-triggers are masked first so that they trigger nothing: ``no change``, ``no interval
  change``, ``unchanged``, ``to ensure resolution``, ``not only``.
- Order of the rules for one mention: (1) ``cannot exclude``, ``not excluded``, ``difficult to
  exclude`` anywhere in the clause -> uncertain; (2) a negation before it (``no``, ``not``,
  ``without``, ``negative``, ``free of``, ``absence of``, ``resolved``, ``resolution of``,
  ``clear``, ``rather than`` ...) -> negative, also over a later hedge ("no findings to suggest
  pneumonia", "no suspicious nodule"); (3) a hedge before it (``may``, ``might``, ``could``,
  ``possible``, ``suspect``, ``questionable``, ``concern for``, ``suggest``, ``versus``,
  ``differential``, ``vague``, ``?`` ...) or ``is suspected`` / ``?`` after it -> uncertain; (4)
  ``is not seen / identified / present``, ``has resolved``, ``is absent``, ``within normal
  limits`` after it -> negative; else positive. "Likely", "probable", "consistent with",
  "represents" are not hedges (the MeSH coders index such findings; chosen on the dev half).
- A pattern's own ``neg`` group (``heart is not enlarged``) and the lexicon's normal statements
  (``heart size is normal``) give negative mentions directly.
- A report's label per finding: 1 (positive) if any mention is positive, else -1 (uncertain) if
  any is uncertain, else 0 (negative) if any is negative, else empty (not mentioned) - the
  CheXpert coding. ``no_finding`` is 1 when no finding and no :data:`OTHER_ABNORMAL` item is
  positive or uncertain, else 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cxrcl.text.lexicon import FINDINGS, NORMAL_STATEMENTS, OTHER_ABNORMAL
from cxrcl.text.reports import report_body, split_sentences

POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0
LABELS = tuple(FINDINGS) + ("no_finding",)


def _rx(patterns: Iterable[str]) -> re.Pattern:
    return re.compile("|".join(rf"\b(?:{p})(?![a-z])" for p in patterns))


PSEUDO = _rx([
    r"no\s+(?:significant\s+|appreciable\s+|definite\s+|substantial\s+)?(?:interval\s+)?change",
    r"not\s+(?:significantly\s+)?changed", r"unchanged", r"no\s+increase", r"not\s+increased",
    r"not\s+only", r"(?:to\s+)?(?:ensure|document|confirm|assess)\s+(?:complete\s+)?resolution",
    r"until\s+resolution", r"without\s+(?:significant\s+|interval\s+)?change",
])
UNCERTAIN_PRE = _rx([
    r"may", r"might", r"could", r"can\s+not\s+(?:be\s+)?(?:exclude\w*|rule\w*\s+out)",
    r"cannot\s+(?:be\s+)?(?:exclude\w*|rule\w*\s+out|entirely\s+exclude\w*)", r"not\s+(?:be\s+)?excluded",
    r"difficult\s+to\s+exclude", r"possible", r"possibly", r"suspect\w*", r"suspicious",
    r"question(?:able)?", r"concern(?:ing)?\s+for",
    r"worrisome\s+for", r"suggest\w*", r"versus", r"vs\.?", r"differential",
    r"equivocal", r"indeterminate", r"uncertain", r"vague",
    r"\?", r"rule\s+out", r"r/o", r"or\s+less\s+likely",
])
UNCERTAIN_POST = _rx([
    r"(?:is|are|was|were)?\s*not\s+(?:entirely\s+)?excluded", r"cannot\s+be\s+(?:entirely\s+)?excluded",
    r"can\s*not\s+be\s+(?:entirely\s+)?(?:excluded|ruled\s+out)", r"not\s+ruled\s+out",
    r"(?:is|are)\s+(?:possible|suspected|questioned|not\s+certain)", r"\?",
])
# "cannot exclude" and kin: uncertain, and masked before negation is looked for
STRONG_UNCERTAIN = _rx([
    r"can\s*not\s+(?:be\s+)?(?:entirely\s+|completely\s+)?(?:exclude\w*|rule\w*\s+out)",
    r"(?:is|are|was|were)?\s*not\s+(?:be\s+)?(?:entirely\s+)?(?:excluded|ruled\s+out)",
    r"difficult\s+to\s+exclude", r"not\s+(?:entirely\s+)?certain",
])
NEGATION_PRE = _rx([
    r"no", r"not", r"without", r"negative\s+for", r"free\s+of", r"absence\s+of", r"absent",
    r"resolved", r"resolution\s+of", r"clear\s+of", r"rather\s+than", r"removal\s+of", r"removed",
    r"nor", r"never", r"none", r"neither", r"exclude[sd]?", r"ruled\s+out", r"resolving",
    r"negative", r"clear",
])
NEGATION_POST = _rx([
    r"(?:is|are|was|were|has\s+been|have\s+been)?\s*(?:not|no\s+longer)\s+(?:\w+\s+)?"
    r"(?:seen|identified|present|visualized|demonstrated|appreciated|evident|noted|visible|detected|"
    r"apparent|shown)",
    r"(?:has|have)\s+(?:\w+\s+)?resolved", r"resolved", r"(?:is|are)\s+absent", r"none",
    r"(?:has|have)\s+(?:been\s+)?removed", r"(?:has|have)\s+cleared",
    r"(?:appears?|is|are)?\s*within\s+(?:\w+\s+){0,2}(?:normal|limits)",
])
# a clause ends at these (the scope of a trigger never crosses one)
_SEEN = r"(?:seen|identified|noted|present|visualized|demonstrated|appreciated|evident)"
TERMINATOR = re.compile(
    r"\b(?:but|however|although|though|except|aside\s+from|apart\s+from|other\s+than|besides|"
    r"which|whereas|yet|with\s+the\s+exception\s+of|there\s+(?:is|are)|"
    rf"(?:is|are|was|were)\s+(?:again\s+|now\s+|also\s+|still\s+)?{_SEEN})\b|[;:]|"
    # a comma that opens a new clause with its own subject and verb ("no effusion, heart is enlarged")
    rf",(?=(?:(?!\b(?:no|not|or|nor)\b)[^,])*\b(?:is|are|was|were|appears?|remains?)\b(?!\s+(?:not\s+)?{_SEEN}))")


@dataclass(frozen=True)
class Mention:
    """One finding mention: where it is and what the context says about it."""

    finding: str
    start: int
    end: int
    text: str
    status: float  # POSITIVE, NEGATIVE or UNCERTAIN
    trigger: str  # the phrase that decided the status ("" for a plain positive)


_FINDING_RX = {name: [re.compile(rf"\b(?:{p})\b") for p in pats] for name, pats in FINDINGS.items()}
_NORMAL_RX = {name: [re.compile(rf"\b(?:{p})") for p in pats] for name, pats in NORMAL_STATEMENTS.items()}
_OTHER_RX = re.compile("|".join(rf"\b(?:{p})\b" for p in OTHER_ABNORMAL))


def _mask(text: str, rx: re.Pattern) -> str:
    return rx.sub(lambda m: "_" * len(m.group()), text)


def _clause_bounds(sentence: str, start: int, end: int) -> tuple[int, int]:
    """The clause around ``[start, end)``: from the last terminator before it to the next after."""
    left, right = 0, len(sentence)
    for m in TERMINATOR.finditer(sentence):
        if m.end() <= start:
            left = m.end()
        elif m.start() >= end:
            right = m.start()
            break
    return left, right


def _status(masked: str, start: int, end: int) -> tuple[float, str]:
    """Status of the mention at ``[start, end)`` from the triggers in its clause.

    Order: "cannot exclude" and kin -> uncertain; a negation before it in the clause -> negative
    (it also wins over a later hedge: "no findings to suggest pneumonia", "no suspicious
    nodule"); a hedge before it or "is not excluded" after it -> uncertain; "is not seen",
    "has resolved" after it -> negative; else positive.
    """
    left, right = _clause_bounds(masked, start, end)
    before, after = masked[left:start], masked[end:right]
    strong = STRONG_UNCERTAIN.search(before) or STRONG_UNCERTAIN.search(after)
    if strong:
        return UNCERTAIN, strong.group().strip()
    neg = list(NEGATION_PRE.finditer(before))
    if neg:
        return NEGATIVE, neg[-1].group()
    unc = list(UNCERTAIN_PRE.finditer(before))
    if unc:
        return UNCERTAIN, unc[-1].group()
    post_unc = UNCERTAIN_POST.search(after)
    if post_unc:
        return UNCERTAIN, post_unc.group().strip()
    post_neg = NEGATION_POST.search(after)
    if post_neg:
        return NEGATIVE, post_neg.group().strip()
    return POSITIVE, ""


def find_mentions(sentence: str) -> list[Mention]:
    """Every finding mention in one sentence with its status."""
    low = sentence.lower()
    masked = _mask(low, PSEUDO)
    out: list[Mention] = []
    for name, rxs in _FINDING_RX.items():
        for rx in rxs:
            for m in rx.finditer(low):
                if m.groupdict().get("neg"):
                    out.append(Mention(name, m.start(), m.end(), m.group(), NEGATIVE, m.group("neg").strip()))
                    continue
                status, trig = _status(masked, m.start(), m.end())
                out.append(Mention(name, m.start(), m.end(), m.group(), status, trig))
    for name, rxs in _NORMAL_RX.items():
        for rx in rxs:
            for m in rx.finditer(low):
                out.append(Mention(name, m.start(), m.end(), m.group(), NEGATIVE, "normal"))
    return out


def _other_abnormal(sentence: str) -> bool:
    low = sentence.lower()
    masked = _mask(low, PSEUDO)
    for m in _OTHER_RX.finditer(low):
        status, _ = _status(masked, m.start(), m.end())
        if status != NEGATIVE:
            return True
    return False


def label_text(text: str) -> dict[str, float]:
    """One report's text -> ``{label: 1 / 0 / -1 / NaN}`` over :data:`LABELS`."""
    best: dict[str, float] = {}
    abnormal = False
    rank = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}
    for sentence in split_sentences(text):
        for m in find_mentions(sentence):
            if m.finding not in best or rank[m.status] > rank[best[m.finding]]:
                best[m.finding] = m.status
        abnormal = abnormal or _other_abnormal(sentence)
    out = {name: best.get(name, math.nan) for name in FINDINGS}
    asserted = any(v in (POSITIVE, UNCERTAIN) for v in best.values())
    out["no_finding"] = NEGATIVE if (asserted or abnormal) else POSITIVE
    return out


def label_report(row: dict) -> dict[str, float]:
    """Labels of one report row (``findings`` + ``impression``, see :func:`report_body`)."""
    return label_text(report_body(row))


def label_columns(texts, names, prefix: str = "label_") -> dict[str, list[float]]:
    """``{prefix + name: values}`` for a prepared data set's label columns from report texts:
    1 positive, 0 negative, NaN for uncertain or not mentioned (a prepared label is 0/1/NaN),
    and NaN for a name the labeller does not know."""
    rows = [label_text("" if t is None or t != t else str(t)) for t in texts]
    out = {}
    for name in names:
        vals = [r.get(name, math.nan) for r in rows]
        out[prefix + name] = [v if v in (POSITIVE, NEGATIVE) else math.nan for v in vals]
    return out


__all__ = ["LABELS", "label_columns", "NEGATIVE", "POSITIVE", "UNCERTAIN", "Mention", "find_mentions", "label_report",
           "label_text"]
