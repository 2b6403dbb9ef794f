"""Split a free-text radiology report into its sections (FINDINGS, IMPRESSION, ...).

:func:`extract_sections` works on MIMIC-CXR free-text reports (``files/pXX/pNNN/sNNN.txt``),
Open-i reports rebuilt as ``LABEL: text`` lines, and any report that marks sections with a header
ending in a colon. Rules (our choices):

- A header is a name followed by ``:``. The known names (``FINDINGS``, ``IMPRESSION``,
  ``INDICATION``, ``COMPARISON``, ``TECHNIQUE``, ``EXAMINATION``, ``HISTORY``, their usual
  variants such as ``CLINICAL HISTORY``, ``REASON FOR EXAMINATION``, ``CONCLUSION``,
  ``FINDINGS AND IMPRESSION`` and common misspellings) are recognised in any case at the start of
  a line, and in upper case anywhere in a line (``... no effusion. IMPRESSION: normal``).
  Other ALL-CAPS names at the start of a line (``NOTIFICATION:``, ``WET READ:``) also start a
  section, stored under their lower snake-case name.
- Variants map onto one key (:data:`SECTION_ALIASES`): ``CONCLUSION`` and
  ``FINDINGS AND IMPRESSION`` -> ``impression``; ``CLINICAL HISTORY`` -> ``history``;
  ``REASON FOR EXAM`` / ``CLINICAL INDICATION`` -> ``indication``; ``COMPARISONS`` ->
  ``comparison``; ``FINDING`` -> ``findings``; ...
- Banner lines (``FINAL REPORT``, ``PRELIMINARY REPORT``, a bare ``ADDENDUM``) are dropped
  wherever they occur; text before the first header is kept as ``preamble``.
- Whitespace inside a section is collapsed to single spaces (MIMIC wraps lines mid-sentence). A
  header that occurs twice has its texts joined with a space. De-identification placeholders
  (``___`` in MIMIC, ``XXXX`` in Open-i) are kept as they are.
- The five standard keys ``findings``, ``impression``, ``indication``, ``comparison`` and
  ``technique`` are always present (``""`` when the report lacks them); other keys only when found.
"""

from __future__ import annotations

import re

STANDARD_SECTIONS = ("findings", "impression", "indication", "comparison", "technique")

# header spelling (lower case, single spaces) -> section key
SECTION_ALIASES: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "findngs": "findings",
    "findins": "findings",
    "findigns": "findings",
    "reference findings": "findings",
    "impression": "impression",
    "impressions": "impression",
    "impresion": "impression",
    "impresson": "impression",
    "imprssion": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
    "findings / impression": "impression",
    "impression and findings": "impression",
    "indication": "indication",
    "indications": "indication",
    "clinical indication": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "reason for study": "indication",
    "comparison": "comparison",
    "comparisons": "comparison",
    "comparision": "comparison",
    "comparison exam": "comparison",
    "comparison film": "comparison",
    "comparison study": "comparison",
    "technique": "technique",
    "techniques": "technique",
    "examination": "examination",
    "exam": "examination",
    "type of examination": "examination",
    "history": "history",
    "clinical history": "history",
    "patient history": "history",
    "clinical information": "history",
    "recommendation": "recommendations",
    "recommendations": "recommendations",
    "recommendation(s)": "recommendations",
    "notification": "notification",
    "wet read": "wet_read",
    "addendum": "addendum",
}

_BANNER = re.compile(r"^\s*(?:final|preliminary|wet read)\s+report\s*$|^\s*addendum\s*$", re.I | re.M)
_KNOWN = "|".join(sorted((re.escape(k).replace(r"\ ", r"\s+") for k in SECTION_ALIASES),
                         key=len, reverse=True))
# a known header at the start of a line, any case
_LINE_KNOWN = re.compile(rf"^[ \t]*(?P<name>{_KNOWN})[ \t]*:", re.I | re.M)
# a known header in upper case anywhere (preceded by start, whitespace or sentence punctuation)
_KNOWN_UPPER = "|".join(sorted((re.escape(k.upper()).replace(r"\ ", r"\s+") for k in SECTION_ALIASES),
                               key=len, reverse=True))
_INLINE_KNOWN = re.compile(rf"(?:(?<=\s)|(?<=^)|(?<=[.;]))(?P<name>{_KNOWN_UPPER})[ \t]*:", re.M)
# any other ALL-CAPS header at the start of a line
_LINE_CAPS = re.compile(r"^[ \t]*(?P<name>[A-Z][A-Z /&()'-]{2,40}?)[ \t]*:", re.M)


def _key(name: str) -> str:
    norm = " ".join(name.lower().split())
    if norm in SECTION_ALIASES:
        return SECTION_ALIASES[norm]
    return re.sub(r"[^a-z0-9]+", "_", norm).strip("_")


def _squash(text: str) -> str:
    return " ".join(text.split())


def find_headers(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, key)`` of every section header in ``text``, in order, non-overlapping."""
    hits: dict[int, tuple[int, str]] = {}
    for rx, upper_only in ((_LINE_KNOWN, False), (_INLINE_KNOWN, True), (_LINE_CAPS, True)):
        for m in rx.finditer(text):
            name = m.group("name")
            if upper_only and name != name.upper():
                continue
            start = m.start("name")
            if start not in hits or m.end() > hits[start][0]:
                hits[start] = (m.end(), _key(name))
    out: list[tuple[int, int, str]] = []
    last_end = -1
    for start in sorted(hits):
        end, key = hits[start]
        if start < last_end:  # inside an earlier (longer) header
            continue
        out.append((start, end, key))
        last_end = end
    return out


def extract_sections(text: str | None) -> dict[str, str]:
    """Report text -> ``{section key: text}`` (see the module docstring for the rules).

    >>> extract_sections("FINAL REPORT\\n INDICATION: cough\\n FINDINGS: Clear lungs.\\n"
    ...                  " IMPRESSION: No acute process.")["impression"]
    'No acute process.'
    """
    out = {k: "" for k in STANDARD_SECTIONS}
    if text is None or not str(text).strip():
        return out
    text = _BANNER.sub(" ", str(text).replace("\r\n", "\n").replace("\r", "\n"))
    headers = find_headers(text)
    first = headers[0][0] if headers else len(text)
    preamble = _squash(text[:first])
    if preamble:
        out["preamble"] = preamble
    for i, (_, end, key) in enumerate(headers):
        stop = headers[i + 1][0] if i + 1 < len(headers) else len(text)
        body = _squash(text[end:stop])
        if out.get(key):
            out[key] = f"{out[key]} {body}".strip()
        else:
            out[key] = body
    return out


__all__ = ["SECTION_ALIASES", "STANDARD_SECTIONS", "extract_sections", "find_headers"]
