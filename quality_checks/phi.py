"""A small regex set that flags text which looks like protected health information.

Converters de-identify structured headers; this is the last line of defence for free
text (captions, conversations, quality descriptions) that an LLM or a template wrote.
We keep our own short pattern list rather than pulling in a full NER de-identifier
(Presidio, philter) because the gate must be cheap and deterministic on millions of
rows, and a hit only has to *flag* a row for review, not redact it. The patterns are
deliberately conservative so that clinical text ("DR grade 2", "5.5 s", "0.05%") does
not trip them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: pattern name -> compiled regex. Names are stable: they appear in metrics and reports.
PHI_PATTERNS: dict[str, re.Pattern[str]] = {
    # a title followed by a capitalised name: "Dr. Jane Smith", "Mr Smith", "Prof. Ng"
    "name_with_title": re.compile(
        r"\b(?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof|Professor|Sister|Nurse)\.?\s+[A-Z][a-zA-Z'\-]+"
        r"(?:\s+[A-Z][a-zA-Z'\-]+)?"
    ),
    # DICOM person-name notation left in text: "DOE^JOHN", "Anonymized^Patient"
    "dicom_person_name": re.compile(r"\b[A-Za-z]{2,}\^[A-Za-z]{2,}"),
    # numeric dates: 2021-03-12, 12/03/2021, 3/12/21, 12.03.2021
    "date_numeric": re.compile(
        r"\b(?:(?:19|20)\d{2}[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])"
        r"|(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|[12]\d|3[01])[-/.](?:19|20)?\d{2})\b"
    ),
    # dates with a month name: "12 March 2021", "March 12, 2021", "Mar 2021"
    "date_text": re.compile(
        r"\b(?:\d{1,2}\s+)?(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"
        r"\s+(?:\d{1,2},?\s+)?(?:19|20)\d{2}\b"
    ),
    # phone numbers: (555) 123-4567, 555-123-4567, +44 20 7946 0958
    "phone": re.compile(
        r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)\s?|\b\d{3}[\s.-])\d{3,4}[\s.-]\d{4}\b"
    ),
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    # medical record numbers: a keyword followed by an id, or a bare long digit run
    "mrn": re.compile(
        r"\b(?:MRN|MR#|medical record(?:\s+(?:number|no\.?))?|patient\s+id|hospital\s+number)"
        r"\s*[:#]?\s*[A-Z0-9][A-Z0-9-]{3,}\b",
        re.IGNORECASE,
    ),
    "long_digit_id": re.compile(r"(?<![\d.])\d{8,}(?![\d.])"),
}


def phi_hits(text: str | None) -> list[str]:
    """Names of the PHI patterns that match ``text`` (one entry per match, sorted)."""
    if not text:
        return []
    hits: list[str] = []
    for name, pattern in PHI_PATTERNS.items():
        hits.extend(name for _ in pattern.finditer(text))
    return sorted(hits)


def phi_hits_in(texts: Iterable[str | None]) -> list[str]:
    """PHI pattern hits over several texts of one sample."""
    hits: list[str] = []
    for text in texts:
        hits.extend(phi_hits(text))
    return sorted(hits)
