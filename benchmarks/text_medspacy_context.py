"""medspaCy's ConText (or negspacy's NegEx) scope on our finding lexicon: labels for the Open-i
reports.

The comparison of docs/text.md ("ConText vs our rule scope"): the same sentences (our splitter),
the same lexicon (cxrcl/text/lexicon.py: findings, normal statements, other abnormalities) and the
same report-level rule as cxrcl.text.labeller; only the negation/uncertainty scope differs: here
medspaCy's ConText with its default rules (NegEx/ConText triggers, VA-maintained) on a blank
spaCy English pipeline (no model download). A mention is negative when ConText says negated
(or it is a normal statement / carries the lexicon's ``neg`` group), uncertain when it says
possible or hypothetical, else positive. With ``--negex``: negspacy's NegEx (``en_clinical``
termset; negation only, so no mention is uncertain), one mention per doc (its entities cannot
overlap).

medspaCy 1.3.1 pins spaCy < 3.8 and numpy < 2 on Python 3.11, which the cxrcl venv cannot take,
so this script runs in its own venv and reads the sentences written by
``benchmarks/text_labeller.py --dump-sentences``::

    python3 -m venv /tmp/nlpvenv && /tmp/nlpvenv/bin/pip install medspacy "numpy<2"
    .venv/bin/python benchmarks/text_labeller.py --dump-sentences /tmp/openi_sentences.json
    /tmp/nlpvenv/bin/python benchmarks/text_medspacy_context.py /tmp/openi_sentences.json \
        benchmarks/results/text_medspacy_labels.json
    /tmp/nlpvenv/bin/pip install negspacy==1.0.4
    /tmp/nlpvenv/bin/python benchmarks/text_medspacy_context.py /tmp/openi_sentences.json \
        benchmarks/results/text_negspacy_labels.json --negex
    .venv/bin/python benchmarks/text_labeller.py   # scores both -> benchmarks/results/text_labeller.json
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from pathlib import Path

import medspacy  # noqa: F401  (registers the medspacy_context factory)
import spacy

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lexicon", REPO / "cxrcl" / "text" / "lexicon.py")
lexicon = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lexicon)

FINDING_RX = {n: [re.compile(rf"\b(?:{p})\b") for p in ps] for n, ps in lexicon.FINDINGS.items()}
NORMAL_RX = {n: [re.compile(rf"\b(?:{p})") for p in ps] for n, ps in lexicon.NORMAL_STATEMENTS.items()}
OTHER_RX = re.compile("|".join(rf"\b(?:{p})\b" for p in lexicon.OTHER_ABNORMAL))
GROUP = "cxrcl"


def build(negex: bool = False):
    nlp = spacy.blank("en")
    if negex:
        from negspacy.negation import Negex  # noqa: F401  (registers the negex factory)

        nlp.add_pipe("negex")
    else:
        nlp.add_pipe("medspacy_context", config={"input_span_type": "group", "span_group_name": GROUP})
    return nlp


def negex_status(nlp, text: str, span) -> bool:
    """negspacy: is this one mention negated (a doc of its own, the mention its only entity)."""
    doc = nlp.make_doc(text)
    for i, token in enumerate(doc):
        token.is_sent_start = i == 0
    doc.ents = [doc.char_span(span.start_char, span.end_char, label=span.label_)]
    for _, proc in nlp.pipeline:
        doc = proc(doc)
    return bool(doc.ents[0]._.negex)


def label_sentences(nlp, sentences: list[str], negex: bool = False) -> dict:
    best: dict[str, float] = {}
    abnormal = False
    rank = {1.0: 3, -1.0: 2, 0.0: 1}
    for sentence in sentences:
        low = sentence.lower()
        doc = nlp.make_doc(low)
        for i, token in enumerate(doc):  # one sentence per doc (our splitter)
            token.is_sent_start = i == 0
        spans, forced = [], {}
        for name, rxs in FINDING_RX.items():
            for rx in rxs:
                for m in rx.finditer(low):
                    span = doc.char_span(m.start(), m.end(), label=name, alignment_mode="expand")
                    if span is None:
                        continue
                    if m.groupdict().get("neg"):
                        forced[len(spans)] = 0.0
                    spans.append(span)
        for name, rxs in NORMAL_RX.items():
            for rx in rxs:
                for m in rx.finditer(low):
                    span = doc.char_span(m.start(), m.end(), label=name, alignment_mode="expand")
                    if span is not None:
                        forced[len(spans)] = 0.0
                        spans.append(span)
        for m in OTHER_RX.finditer(low):
            span = doc.char_span(m.start(), m.end(), label="OTHER", alignment_mode="expand")
            if span is not None:
                spans.append(span)
        doc.spans[GROUP] = spans
        if not negex:
            for _, proc in nlp.pipeline:
                doc = proc(doc)
        for i, span in enumerate(doc.spans[GROUP]):
            if i in forced:
                status = forced[i]
            elif negex:
                status = 0.0 if negex_status(nlp, low, span) else 1.0
            elif span._.is_negated:
                status = 0.0
            elif span._.is_uncertain or span._.is_hypothetical:
                status = -1.0
            else:
                status = 1.0
            if span.label_ == "OTHER":
                abnormal = abnormal or status != 0.0
            elif span.label_ not in best or rank[status] > rank[best[span.label_]]:
                best[span.label_] = status
    out = dict(best)  # findings not mentioned are left out (NaN when read back)
    asserted = any(v in (1.0, -1.0) for v in best.values())
    out["no_finding"] = 0.0 if (asserted or abnormal) else 1.0
    return out


def main(src: str, dst: str, negex: bool = False) -> None:
    reports = json.loads(Path(src).read_text())
    nlp = build(negex)
    t0 = time.perf_counter()
    labels = {rid: label_sentences(nlp, sents, negex) for rid, sents in reports.items()}
    seconds = time.perf_counter() - t0
    if negex:
        from importlib.metadata import version

        versions = {"negspacy": version("negspacy"), "spacy": spacy.__version__}
    else:
        versions = {"medspacy": medspacy.__version__, "spacy": spacy.__version__}
    Path(dst).write_text(json.dumps({**versions, "seconds": round(seconds, 2), "labels": labels}))
    print(f"{len(labels)} reports in {seconds:.1f} s -> {dst}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], negex="--negex" in sys.argv[3:])
