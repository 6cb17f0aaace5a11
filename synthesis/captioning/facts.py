"""The structured facts a caption is grounded in: parsing, validation, hashing.

A facts dict is what the template renders and what the grounding guard checks an LLM
output against. Documented keys (every family):

* ``modality`` (str, one of ``curation.schema.MODALITIES``), required
* ``body_part`` (str or None)
* ``laterality`` (``left`` / ``right`` / ``bilateral`` / None)
* ``findings`` (list of str): what the source labels say is present
* ``absent_findings`` (list of str): what the source labels say is absent
* ``grade`` (int or None)
* ``numbers`` (dict name -> int/float): measured values a caption may quote

Optional, family-specific keys: fundus ``dr_grade``, ``dme_risk``, ``lesions``
(list of ``{type, count?, location?}``), ``optic_disc``, ``vessels``,
``nerve_fibre_layer``; surgery ``narration``, ``action``, ``instrument``, ``phase``;
quality ``degradation`` (``{type, severity, psnr_db?, ssim?}``) and
``quality_verdict``; segmentation ``mask_targets``; VQA ``question`` / ``answer``.
Unknown keys are kept (they reach the prompt) but never required.

Bad facts raise :class:`FactsError` with the key, the value and what was expected, so
the stage can turn them into a ``Reject`` instead of crashing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from curation.schema import MODALITIES

LATERALITIES: tuple[str, ...] = ("left", "right", "bilateral")
VERDICTS: tuple[str, ...] = ("good", "usable", "reject")

Facts = dict[str, Any]


class FactsError(ValueError):
    """Facts that cannot be rendered or checked; the message says which key and why."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _string_list(facts: Mapping[str, Any], key: str) -> list[str]:
    value = facts.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise FactsError(f"facts[{key!r}] must be a list of non-empty strings, got {value!r}")
    return [v.strip() for v in value]


def _optional_int(facts: Mapping[str, Any], key: str) -> int | None:
    value = facts.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise FactsError(f"facts[{key!r}] must be an integer or null, got {value!r}")
    return value


def normalize_facts(raw: Mapping[str, Any]) -> Facts:
    """Validate ``raw`` and return a copy with every documented key present.

    Lesion types of fundus ``lesions`` are added to ``findings`` (a lesion listed is a
    finding present), and a finding may not also be listed as absent.
    """
    if not isinstance(raw, Mapping):
        raise FactsError(f"facts must be a JSON object, got {type(raw).__name__}")
    facts: Facts = dict(raw)
    modality = facts.get("modality")
    if modality not in MODALITIES:
        raise FactsError(f"facts['modality'] must be one of {list(MODALITIES)}, got {modality!r}")
    body_part = facts.get("body_part")
    if body_part is not None and not (isinstance(body_part, str) and body_part.strip()):
        raise FactsError(f"facts['body_part'] must be a non-empty string or null, got {body_part!r}")
    laterality = facts.get("laterality")
    if laterality is not None and laterality not in LATERALITIES:
        raise FactsError(
            f"facts['laterality'] must be one of {list(LATERALITIES)} or null, got {laterality!r}"
        )
    facts["body_part"] = body_part.strip() if isinstance(body_part, str) else None
    facts["laterality"] = laterality
    findings = _string_list(facts, "findings")
    absent = _string_list(facts, "absent_findings")
    lesions = facts.get("lesions") or []
    if not isinstance(lesions, list) or not all(
        isinstance(les, Mapping) and isinstance(les.get("type"), str) for les in lesions
    ):
        raise FactsError(f"facts['lesions'] must be a list of objects with a 'type', got {lesions!r}")
    for lesion in lesions:
        if lesion["type"] not in findings:
            findings.append(lesion["type"])
    clash = sorted({f.lower() for f in findings} & {a.lower() for a in absent})
    if clash:
        raise FactsError(f"facts list {clash} as both present and absent")
    facts["findings"] = findings
    facts["absent_findings"] = absent
    facts["lesions"] = [dict(les) for les in lesions]
    facts["grade"] = _optional_int(facts, "grade")
    facts["dr_grade"] = _optional_int(facts, "dr_grade")
    numbers = facts.get("numbers") or {}
    if not isinstance(numbers, Mapping) or not all(
        isinstance(k, str) and _is_number(v) for k, v in numbers.items()
    ):
        raise FactsError(f"facts['numbers'] must map names to numbers, got {numbers!r}")
    facts["numbers"] = dict(numbers)
    degradation = facts.get("degradation")
    if degradation is not None:
        if not isinstance(degradation, Mapping) or not isinstance(degradation.get("type"), str):
            raise FactsError(f"facts['degradation'] must be an object with a 'type', got {degradation!r}")
        severity = degradation.get("severity")
        if severity not in (1, 2, 3):
            raise FactsError(f"facts['degradation']['severity'] must be 1, 2 or 3, got {severity!r}")
        facts["degradation"] = dict(degradation)
    verdict = facts.get("quality_verdict")
    if verdict is not None and verdict not in VERDICTS:
        raise FactsError(f"facts['quality_verdict'] must be one of {list(VERDICTS)}, got {verdict!r}")
    for key in ("narration", "action", "instrument", "phase", "question", "answer"):
        value = facts.get(key)
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise FactsError(f"facts[{key!r}] must be a non-empty string or null, got {value!r}")
    facts["mask_targets"] = _string_list(facts, "mask_targets")
    return facts


def parse_facts(facts_json: str | None) -> Facts:
    """Parse and validate one ``facts_json`` cell."""
    if facts_json is None or not facts_json.strip():
        raise FactsError("facts_json is empty; expected a JSON object")
    try:
        raw = json.loads(facts_json)
    except json.JSONDecodeError as exc:
        raise FactsError(f"facts_json is not valid JSON ({exc.msg} at char {exc.pos})") from exc
    return normalize_facts(raw)


def facts_sha256(facts: Mapping[str, Any]) -> str:
    """A stable hash of the facts (key order and whitespace do not matter)."""
    canonical = json.dumps(facts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def numeric_values(value: Any) -> list[float]:
    """Every number anywhere in ``value`` (nested dicts/lists), booleans excluded.

    The guard allows a caption to quote any of them: grades, counts, measurements,
    a degradation's severity and PSNR.
    """
    if _is_number(value):
        return [float(value)]
    if isinstance(value, Mapping):
        return [n for v in value.values() for n in numeric_values(v)]
    if isinstance(value, list | tuple):
        return [n for v in value for n in numeric_values(v)]
    return []
