"""The grounding guard: does a caption say only what its facts say?

``check_grounding(facts, text)`` returns ``GroundingResult(ok, problems)``. A caption
passes when every required fact is still stated (findings, grade, degradation type,
quality verdict, surgical instrument; synonym-aware through the versioned table in
``synonyms.v1.json``), nothing contradicts or goes beyond the facts (a finding, grade,
laterality, number, modality, degradation or instrument the facts do not have, a
finding the facts list as absent stated as present, a present finding stated as
absent), no PHI pattern appears (titled names, dates, phone numbers, e-mail
addresses, record-number-like identifiers) and the length is within bounds.

Why our own code and not a clinical NLP library: negation detection is a small
NegEx-style rule set (cue words, clause boundaries, scope terminators) that runs in
microseconds per caption with no model download; spaCy/negspacy or medspaCy would add a
large dependency and a pipeline model for the same rules. The vocabulary is what limits
the guard: an invented finding is caught only if its name (or a synonym) is in the
table, so the table grows with the datasets (a new file version each time).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from synthesis.captioning.facts import Facts, FactsError, normalize_facts, numeric_values

SYNONYMS_PATH = Path(__file__).with_name("synonyms.v1.json")
GROUPS: tuple[str, ...] = ("findings", "degradations", "instruments", "modalities")
#: facts keys holding free-text descriptions the template renders verbatim
DESCRIPTOR_KEYS: tuple[str, ...] = ("optic_disc", "vessels", "nerve_fibre_layer")


@dataclasses.dataclass(frozen=True)
class GroundingResult:
    """The verdict on one caption: ``ok`` and, when not ok, what is wrong."""

    ok: bool
    problems: list[str]


@dataclasses.dataclass(frozen=True)
class Mention:
    canon: str
    surface: str
    start: int
    end: int
    negated: bool


@dataclasses.dataclass(frozen=True)
class SynonymTable:
    """Canonical term -> surface forms, per group (findings, degradations, ...)."""

    version: str
    groups: dict[str, dict[str, tuple[str, ...]]]

    @functools.cached_property
    def _index(self) -> dict[str, dict[str, str]]:
        """Per group: normalized form -> canonical term (first canon listing it wins)."""
        index: dict[str, dict[str, str]] = {}
        for group, canons in self.groups.items():
            keys = index.setdefault(group, {})
            for canon, forms in canons.items():
                for form in (canon, *forms):
                    keys.setdefault(_norm_term(form), canon)
        return index

    def canon_of(self, group: str, term: str) -> str | None:
        """The canonical term whose forms include ``term`` (plural-tolerant), if any."""
        return self._index.get(group, {}).get(_norm_term(term))

    def forms_of(self, group: str, canon: str) -> tuple[str, ...]:
        return self.groups.get(group, {}).get(canon, (canon,))


def _norm_term(term: str) -> str:
    term = re.sub(r"[\s_-]+", " ", term.strip().lower())
    if term.endswith("es") and term[:-2] and not term.endswith("ses"):
        return term[:-2] if term[:-2].endswith(("ch", "sh", "x")) else term[:-1]
    return term[:-1] if term.endswith("s") and not term.endswith("ss") else term


@functools.lru_cache(maxsize=4)
def load_synonyms(path: str | None = None) -> SynonymTable:
    """Load a synonym table file (default: the packaged ``synonyms.v1.json``)."""
    source = Path(path) if path else SYNONYMS_PATH
    raw = json.loads(source.read_text(encoding="utf-8"))
    groups = {
        group: {canon: tuple(forms) for canon, forms in raw.get(group, {}).items()}
        for group in GROUPS
    }
    return SynonymTable(version=str(raw["version"]), groups=groups)


# --- negation (NegEx-style): a cue before the term in its clause, or after it -------------
_CLAUSE_BREAK = re.compile(
    r"[.;:!?\n]|\b(?:but|however|although|though|whereas|while|yet|except)\b", re.IGNORECASE
)
_PRE_NEGATION = re.compile(
    r"\b(?:no|not|without|absence of|absent|negative for|free of|nor|neither|none|"
    r"rules? out|ruled out|lack of|lacks?)\b",
    re.IGNORECASE,
)
_SCOPE_END = re.compile(
    r"\b(?:with|which|is|are|was|were|seen|present|noted|visible|has|have|shows|"
    r"demonstrates?|showing|there)\b",
    re.IGNORECASE,
)
_POST_NEGATION = re.compile(
    r"\b(?:(?:is|are|was|were|has been|have been)\s+(?:not|absent|excluded)|"
    r"not\s+(?:seen|present|visible|observed|identified|detected|evident|noted|found|shown)|"
    r"absent|ruled out|excluded)\b",
    re.IGNORECASE,
)
_POST_POSITIVE = re.compile(
    r"\b(?:(?:is|are|was|were)\s+(?:present|seen|visible|noted|evident|observed)|present|shows)\b",
    re.IGNORECASE,
)


def _clause_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    clause_start = 0
    for m in _CLAUSE_BREAK.finditer(text, 0, start):
        clause_start = m.end()
    nxt = _CLAUSE_BREAK.search(text, end)
    return clause_start, (nxt.start() if nxt else len(text))


def is_negated(text: str, start: int, end: int) -> bool:
    """Whether the term at ``text[start:end]`` is stated as absent."""
    clause_start, clause_end = _clause_bounds(text, start, end)
    before = text[clause_start:start]
    cues = list(_PRE_NEGATION.finditer(before))
    if cues and not _SCOPE_END.search(before, cues[-1].end()):
        return True
    after = text[end:clause_end]
    negative = _POST_NEGATION.search(after)
    positive = _POST_POSITIVE.search(after)
    return bool(negative and (positive is None or negative.start() < positive.start()))


def _match_key(surface: str) -> str:
    return re.sub(r"[\s-]+", " ", surface.strip())


@functools.lru_cache(maxsize=256)
def _vocabulary_regex(items: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[re.Pattern[str], dict[str, str]]:
    """One alternation over every form (longest first) and a surface-key -> canon map.

    Abbreviations (forms in capitals) are matched case-sensitively through a scoped
    ``(?-i:...)`` group; everything else case-insensitively.
    """
    alternatives: list[tuple[int, str]] = []
    keys: dict[str, str] = {}
    for canon, forms in items:
        for form in forms:
            parts = [re.escape(p) for p in re.split(r"[\s-]+", form.strip()) if p]
            body = r"[\s-]+".join(parts)
            case_sensitive = form.upper() == form and any(c.isalpha() for c in form)
            variants = [body]
            if form.endswith("y") and not case_sensitive:
                variants.append(body[:-1] + "ies")
            for variant in variants:
                pattern = f"(?-i:{variant}(?:s|es)?)" if case_sensitive else f"{variant}(?:s|es)?"
                alternatives.append((len(form), pattern))
            key = _match_key(form)
            keys.setdefault(key if case_sensitive else key.lower(), canon)
    alternatives.sort(key=lambda a: -a[0])
    regex = re.compile(r"(?<![\w&/])(?:" + "|".join(p for _, p in alternatives) + r")(?![\w&/])", re.IGNORECASE)
    return regex, keys


def _canon_of_surface(surface: str, keys: dict[str, str]) -> str | None:
    key = _match_key(surface)
    for candidate in (key, key.lower()):
        for variant in (candidate, candidate[:-1], candidate[:-2], candidate[:-3] + "y"):
            if variant in keys:
                return keys[variant]
    return None


def find_mentions(text: str, forms_by_canon: Mapping[str, Iterable[str]]) -> list[Mention]:
    """Non-overlapping mentions of any canonical term, scanning left to right and
    preferring the longest form at each position; each with its negation status."""
    items = tuple(sorted((canon, tuple(forms)) for canon, forms in forms_by_canon.items()))
    regex, keys = _vocabulary_regex(items)
    mentions = []
    for m in regex.finditer(text):
        canon = _canon_of_surface(m.group(0), keys)
        if canon is not None:
            mentions.append(Mention(canon, m.group(0), m.start(), m.end(), is_negated(text, m.start(), m.end())))
    return mentions


# --- grades -----------------------------------------------------------------------------
_WORD_NUMBERS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5,
}
_GRADE_RE = re.compile(
    r"\bgrade\s*(?:[:=]\s*)?(\d+|zero|one|two|three|four|five|iv|v|i{1,3})\b", re.IGNORECASE
)
_DR_STAGE_RE = re.compile(
    r"\b(no|mild|moderate|severe)\s+(?:(?:signs?|evidence) of\s+|apparent\s+)?"
    r"(?:non[\s-]?proliferative\s+)?(?:diabetic\s+retinopathy|npdr|dr)\b",
    re.IGNORECASE,
)
_PDR_RE = re.compile(
    r"(?<!non)(?<!non-)(?<!non )\bproliferative\s+(?:diabetic\s+retinopathy|dr)\b|\bPDR\b"
)
_DR_STAGE_VALUE = {"no": 0, "mild": 1, "moderate": 2, "severe": 3}


def _grade_mentions(text: str) -> list[tuple[int, str, tuple[int, int]]]:
    found = []
    for m in _GRADE_RE.finditer(text):
        token = m.group(1).lower()
        value = int(token) if token.isdigit() else _WORD_NUMBERS[token]
        found.append((value, m.group(0), m.span()))
    return found


def _dr_stage_mentions(text: str) -> list[tuple[int, str, tuple[int, int]]]:
    found = [(_DR_STAGE_VALUE[m.group(1).lower()], m.group(0), m.span()) for m in _DR_STAGE_RE.finditer(text)]
    found += [(4, m.group(0), m.span()) for m in _PDR_RE.finditer(text)]
    return found


# --- numbers ----------------------------------------------------------------------------
_NUMBER_RE = re.compile(r"(?<![\w.,/-])(\d+(?:\.\d+)?)(%|[A-Za-z]+\d?)?(?![\w/])")
_NUMBER_WORD_RE = re.compile(
    r"\b(two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)\b", re.IGNORECASE
)
_UNITS = {"%", "mm", "cm", "m", "ml", "l", "s", "ms", "db", "hu", "px", "mm2", "mm3", "cm2", "cm3",
          "kg", "g", "mg", "um", "x", "deg", "d", "mmhg"}


def _number_matches(value: float, allowed: list[float], decimals: int, percent: bool) -> bool:
    for a in allowed:
        if round(a, decimals) == value or abs(a - value) < 1e-9:
            return True
        if percent and (abs(a * 100 - value) < 0.5 * 10 ** (-decimals) + 1e-9):
            return True
    return False


# --- laterality, PHI, verdicts ----------------------------------------------------------
_LEFT_RE = re.compile(r"\bleft\b(?![\s-]+(?:ventric|atri|hand|main|anterior descending))|\bOS\b", re.IGNORECASE)
_RIGHT_RE = re.compile(r"\bright\b(?![\s-]+(?:ventric|atri|hand|coronary))|\bOD\b", re.IGNORECASE)
_BILATERAL_RE = re.compile(
    r"\bbilateral(?:ly)?\b|\bboth\s+(?:eyes|sides|lungs|kidneys|knees|hips|breasts|hemithoraces)\b|\bOU\b",
    re.IGNORECASE,
)
_MONTHS = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|Jun(?:e)?|Jul(?:y)?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
PHI_PATTERNS: dict[str, re.Pattern[str]] = {
    "titled name": re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Professor|Doctor)\.?\s+[A-Z][a-z]+"),
    "named person": re.compile(
        r"\b(?:[Pp]atient|[Nn]ame)\s+(?:named|called|is|:)\s*[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?"
    ),
    "date": re.compile(
        rf"\b\d{{1,2}}[/.-]\d{{1,2}}[/.-]\d{{2,4}}\b|\b\d{{4}}-\d{{2}}-\d{{2}}\b|"
        rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTHS}\.?,?\s+\d{{4}}\b|"
        rf"\b{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b|\b{_MONTHS}\s+\d{{4}}\b"
    ),
    "phone number": re.compile(r"(?:\+\d{1,3}[\s.-]?)?\(?\b\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}\b"),
    "email address": re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"),
    "record number": re.compile(
        r"\b(?:MRN|medical record(?: number)?|patient id|hospital number|NHS number|accession(?: number)?)"
        r"\s*(?:no\.?|number|#|:)?\s*[A-Z0-9-]{4,}|\b[A-Z]{0,3}\d{6,}\b",
        re.IGNORECASE,
    ),
}
_VERDICT_RE = re.compile(
    r"\bquality\b[^.;]{0,40}?\b(?:is|was|:|rated|deemed|judged|considered)\s+(?:as\s+)?"
    r"(good|usable|reject(?:ed)?|poor|excellent|unusable|acceptable)\b",
    re.IGNORECASE,
)
_VERDICT_OF = {"good": "good", "excellent": "good", "usable": "usable", "acceptable": "usable",
               "reject": "reject", "rejected": "reject", "poor": "reject", "unusable": "reject"}
_SEVERITY_RE = re.compile(r"\b(mild|mildly|slight|slightly|minor|moderate|moderately|severe|severely|heavy|heavily|strong|marked)\b", re.IGNORECASE)
_SEVERITY_OF = {"mild": 1, "mildly": 1, "slight": 1, "slightly": 1, "minor": 1, "moderate": 2,
                "moderately": 2, "severe": 3, "severely": 3, "heavy": 3, "heavily": 3, "strong": 3, "marked": 3}
_GLOBAL_NORMAL_RE = re.compile(
    r"\b(?:no\s+(?:abnormalit(?:y|ies)|patholog(?:y|ical findings?)|lesions?|significant findings?|acute findings?)|"
    r"(?:normal|unremarkable|healthy)\s+(?:fundus|retina|study|scan|image|examination|exam|radiograph|chest\s+x-?ray))\b",
    re.IGNORECASE,
)


def _resolve(table: SynonymTable, group: str, terms: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Canonical term -> forms for each of ``terms``; unknown terms stand for themselves."""
    resolved: dict[str, tuple[str, ...]] = {}
    for term in terms:
        canon = table.canon_of(group, term)
        if canon is None:
            resolved[term.lower()] = (term.lower(),)
        else:
            resolved[canon] = table.forms_of(group, canon)
    return resolved


def _check_findings(facts: Facts, text: str, table: SynonymTable, problems: list[str]) -> None:
    present = _resolve(table, "findings", facts["findings"])
    absent = _resolve(table, "findings", facts["absent_findings"])
    allowed = set(present) | set(_resolve(table, "findings", facts.get("mask_targets") or []))
    expected_dr = _expected_dr_grade(facts)
    if expected_dr:
        allowed.add("diabetic retinopathy")
    dme = facts.get("dme_risk")
    if (isinstance(dme, int | float) and not isinstance(dme, bool) and dme > 0) or (
        isinstance(dme, str) and dme.lower() not in ("none", "no", "0")
    ):
        allowed.add("macular oedema")
    vocabulary = dict(table.groups["findings"])
    vocabulary.update(present)
    vocabulary.update(absent)
    # free-text fundus descriptors are facts too: terms they state positively are allowed
    for key in DESCRIPTOR_KEYS:
        if isinstance(facts.get(key), str):
            allowed |= {m.canon for m in find_mentions(facts[key], vocabulary) if not m.negated}
    mentions = find_mentions(text, vocabulary)
    for canon in present:
        stated = [m for m in mentions if m.canon == canon]
        if not any(not m.negated for m in stated):
            if stated:
                problems.append(f"contradiction: finding '{canon}' is present in the facts but stated as absent ('{stated[0].surface}')")
            else:
                problems.append(f"missing finding: '{canon}' is in the facts but not stated")
    reported: set[str] = set()
    for m in mentions:
        if m.negated or m.canon in allowed or m.canon in reported:
            continue
        reported.add(m.canon)
        if m.canon in absent:
            problems.append(f"contradiction: finding '{m.canon}' is absent in the facts but stated as present ('{m.surface}')")
        else:
            problems.append(f"invented finding: '{m.surface}' ({m.canon}) is not in the facts")
    if present and (normal := _GLOBAL_NORMAL_RE.search(text)):
        problems.append(f"contradiction: '{normal.group(0)}' although the facts list findings {sorted(present)}")


def _expected_dr_grade(facts: Facts) -> int | None:
    if facts.get("dr_grade") is not None:
        return int(facts["dr_grade"])
    if facts.get("modality") == "CFP" and facts.get("grade") is not None:
        return int(facts["grade"])
    return None


def _check_grades(facts: Facts, text: str, problems: list[str]) -> list[tuple[int, int]]:
    expected = facts["grade"] if facts["grade"] is not None else facts.get("dr_grade")
    expected_dr = _expected_dr_grade(facts)
    grades, stages = _grade_mentions(text), _dr_stage_mentions(text)
    for value, surface, _span in grades:
        if expected is None:
            problems.append(f"unsupported grade: text says '{surface}' but the facts have no grade")
        elif value not in (expected, expected_dr):
            problems.append(f"wrong grade: text says '{surface}', facts say grade {expected}")
    for value, surface, _span in stages:
        if expected_dr is None:
            if value > 0:
                problems.append(f"unsupported grade: text says '{surface}' but the facts have no DR grade")
        elif value != expected_dr:
            problems.append(f"wrong grade: text says '{surface}' (grade {value}), facts say grade {expected_dr}")
    if expected is not None and not any(v in (expected, expected_dr) for v, _s, _p in grades + stages):
        problems.append(f"missing grade: facts grade {expected} is not stated")
    return [span for _v, _s, span in grades]


def _check_numbers(facts: Facts, text: str, skip: list[tuple[int, int]], problems: list[str]) -> None:
    allowed = numeric_values({k: v for k, v in facts.items() if k not in ("findings", "absent_findings")})
    for m in _NUMBER_RE.finditer(text):
        if any(s <= m.start() < e for s, e in skip):
            continue
        unit = (m.group(2) or "").lower()
        if unit and unit not in _UNITS:
            continue  # part of a token such as 3D, T2w, 2nd: not a quantity
        token = m.group(1)
        decimals = len(token.split(".")[1]) if "." in token else 0
        if not _number_matches(float(token), allowed, decimals, percent=unit == "%"):
            problems.append(f"unsupported number: '{m.group(0)}' is not among the facts' values")
    for m in _NUMBER_WORD_RE.finditer(text):
        if float(_WORD_NUMBERS[m.group(1).lower()]) not in allowed:
            problems.append(f"unsupported number: '{m.group(0)}' is not among the facts' values")


def _check_laterality(facts: Facts, text: str, problems: list[str]) -> None:
    sides = set()
    if _BILATERAL_RE.search(text):
        sides.add("bilateral")
    if _LEFT_RE.search(text):
        sides.add("left")
    if _RIGHT_RE.search(text):
        sides.add("right")
    if not sides:
        return
    expected = facts["laterality"]
    stated = "bilateral" if "bilateral" in sides or {"left", "right"} <= sides else next(iter(sides))
    if expected is None:
        problems.append(f"unsupported laterality: text says {stated}, the facts give none")
    elif stated != expected:
        problems.append(f"wrong laterality: text says {stated}, facts say {expected}")


def _check_modality(facts: Facts, text: str, table: SynonymTable, problems: list[str]) -> None:
    for m in find_mentions(text, table.groups["modalities"]):
        if m.canon != facts["modality"]:
            problems.append(f"wrong modality: text says '{m.surface}' ({m.canon}), facts say {facts['modality']}")
            return


def _check_required_term(
    facts_term: str, group: str, text: str, table: SynonymTable, problems: list[str]
) -> None:
    """One term the text must state (degradation type, instrument); no rival terms."""
    canon = table.canon_of(group, facts_term) or facts_term.replace("_", " ").lower()
    forms = table.forms_of(group, canon) if canon in table.groups[group] else (canon,)
    vocabulary = dict(table.groups[group])
    vocabulary[canon] = forms
    mentions = find_mentions(text, vocabulary)
    if not any(m.canon == canon and not m.negated for m in mentions):
        problems.append(f"missing {group[:-1]}: '{canon}' is in the facts but not stated")
    own_words = {w for f in forms for w in re.split(r"[\s/-]+", f.lower())}
    for m in mentions:
        if m.canon != canon and not m.negated and m.surface.lower() not in own_words:
            problems.append(f"invented {group[:-1]}: '{m.surface}' ({m.canon}) is not in the facts")
            return


def _check_quality(facts: Facts, text: str, table: SynonymTable, problems: list[str]) -> None:
    degradation = facts.get("degradation")
    if degradation:
        _check_required_term(str(degradation["type"]), "degradations", text, table, problems)
        for m in _SEVERITY_RE.finditer(text):
            if _SEVERITY_OF[m.group(1).lower()] != degradation["severity"]:
                problems.append(
                    f"wrong severity: text says '{m.group(1)}', facts say severity {degradation['severity']} of 3"
                )
                break
    verdict = facts.get("quality_verdict")
    if verdict:
        stated = {_VERDICT_OF[m.group(1).lower()] for m in _VERDICT_RE.finditer(text)}
        if verdict not in stated:
            problems.append(f"missing verdict: the quality verdict '{verdict}' is not stated")
        for other in sorted(stated - {verdict}):
            problems.append(f"wrong verdict: text says quality is '{other}', facts say '{verdict}'")


def find_phi(text: str) -> list[str]:
    """PHI-like spans in ``text``, as 'kind: span' strings."""
    return [f"{kind}: '{m.group(0)}'" for kind, pattern in PHI_PATTERNS.items() for m in pattern.finditer(text)]


def check_grounding(
    facts: Mapping[str, Any],
    text: str,
    *,
    min_chars: int = 20,
    max_chars: int = 1500,
    synonyms: SynonymTable | None = None,
) -> GroundingResult:
    """Check that ``text`` states the facts and nothing else (see the module docstring)."""
    try:
        normalized = normalize_facts(facts)
    except FactsError as exc:
        return GroundingResult(False, [f"bad facts: {exc}"])
    table = synonyms or load_synonyms()
    problems: list[str] = []
    stripped = text.strip()
    if len(stripped) < min_chars:
        problems.append(f"too short: {len(stripped)} characters, at least {min_chars} expected")
    if len(stripped) > max_chars:
        problems.append(f"too long: {len(stripped)} characters, at most {max_chars} expected")
    problems += [f"phi: {p}" for p in find_phi(stripped)]
    _check_findings(normalized, stripped, table, problems)
    grade_spans = _check_grades(normalized, stripped, problems)
    _check_numbers(normalized, stripped, grade_spans, problems)
    _check_laterality(normalized, stripped, problems)
    _check_modality(normalized, stripped, table, problems)
    _check_quality(normalized, stripped, table, problems)
    if normalized.get("instrument"):
        _check_required_term(normalized["instrument"], "instruments", stripped, table, problems)
    return GroundingResult(not problems, problems)
