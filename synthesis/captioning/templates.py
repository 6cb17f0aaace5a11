"""Deterministic templates: facts -> a grounded base text, one renderer per family.

The template text is the floor of every caption: the LLM only rewrites it, and when a
rewrite fails the grounding guard the template text is what the sample keeps. So a
template states every fact it is given and nothing else (the tests check that each
family's template passes :func:`~synthesis.captioning.grounding.check_grounding`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from synthesis.captioning.facts import Facts

MODALITY_NAMES: dict[str, str] = {
    "CT": "CT scan",
    "MR": "MRI scan",
    "XR": "X-ray radiograph",
    "CFP": "colour fundus photograph",
    "OCT": "OCT scan",
    "US": "ultrasound image",
    "ENDO": "endoscopic image",
    "PATH": "histopathology image",
    "DERM": "dermoscopic image",
    "PET": "PET scan",
    "SURG": "surgical video clip",
    "OTHER": "medical image",
}
DR_STAGES: dict[int, str] = {
    0: "no diabetic retinopathy",
    1: "mild non-proliferative diabetic retinopathy",
    2: "moderate non-proliferative diabetic retinopathy",
    3: "severe non-proliferative diabetic retinopathy",
    4: "proliferative diabetic retinopathy",
}
SEVERITY_WORDS: dict[int, str] = {1: "mild", 2: "moderate", 3: "severe"}


def join_words(items: Sequence[str], conjunction: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def _format_number(value: float) -> str:
    return f"{value:g}"


def with_article(phrase: str) -> str:
    """'an X-ray radiograph', 'a CT scan' (by sound: X-, MRI and OCT take 'an')."""
    vowel_sound = phrase[:1].lower() in "aeiou" or phrase.startswith(("X-", "MRI", "OCT"))
    return f"{'an' if vowel_sound else 'a'} {phrase}"


def _subject(facts: Facts) -> str:
    """'colour fundus photograph of the left eye' and the like."""
    name = MODALITY_NAMES[facts["modality"]]
    part = facts.get("body_part")
    laterality = facts.get("laterality")
    if part:
        if laterality == "bilateral":
            return f"{name} of both sides ({part})"
        side = f"{laterality} " if laterality else ""
        return f"{name} of the {side}{part}"
    return f"{name} ({laterality})" if laterality else name


def _findings_sentences(facts: Facts) -> list[str]:
    sentences = []
    if facts["findings"]:
        sentences.append(f"Findings: {join_words(facts['findings'])}.")
    if facts["absent_findings"]:
        sentences.append(f"There is no {join_words(facts['absent_findings'], 'or')}.")
    return sentences


def _numbers_sentence(facts: Facts) -> list[str]:
    numbers = facts["numbers"]
    if not numbers:
        return []
    parts = [f"{name.replace('_', ' ')} {_format_number(v)}" for name, v in numbers.items()]
    return [f"Measurements: {join_words(parts)}."]


def render_fundus(facts: Facts) -> str:
    """RetinaLogos: optic disc, vessels, nerve fibre layer, lesions, DR grade."""
    eye = {"left": "left eye", "right": "right eye", "bilateral": "both eyes"}.get(
        facts.get("laterality") or "", "eye"
    )
    out = [f"Colour fundus photograph of the {eye}."]
    for key, label in (("optic_disc", "Optic disc"), ("vessels", "Vessels"),
                       ("nerve_fibre_layer", "Nerve fibre layer")):
        if facts.get(key):
            out.append(f"{label}: {facts[key]}.")
    lesion_parts = []
    for lesion in facts.get("lesions") or []:
        part = lesion["type"]
        if isinstance(lesion.get("count"), int):
            part = f"{lesion['type']} (count {lesion['count']})"
        if lesion.get("location"):
            part += f" in the {lesion['location']} region"
        lesion_parts.append(part)
    listed = {lesion["type"] for lesion in facts.get("lesions") or []}
    others = [f for f in facts["findings"] if f not in listed]
    if lesion_parts or others:
        out.append(f"Findings: {join_words(lesion_parts + others)}.")
    if facts["absent_findings"]:
        out.append(f"There is no {join_words(facts['absent_findings'], 'or')}.")
    dr = facts.get("dr_grade") if facts.get("dr_grade") is not None else facts.get("grade")
    if dr is not None:
        stage = DR_STAGES.get(dr, "diabetic retinopathy")
        out.append(f"Diabetic retinopathy grade {dr} ({stage}).")
    dme = facts.get("dme_risk")
    if dme is not None:
        out.append(f"Risk of diabetic macular edema: {dme}." if dme else "No risk of diabetic macular edema.")
    out += _numbers_sentence(facts)
    return " ".join(out)


def render_unimed(facts: Facts) -> str:
    """UniMed caption (or VQA answer when the facts carry ``question``/``answer``)."""
    out = []
    if facts.get("answer"):
        out.append(f"{facts['answer'].strip().rstrip('.').capitalize()}.")
    subject = _subject(facts)
    out.append(f"This is {with_article(subject)}.")
    out += _findings_sentences(facts)
    if facts.get("grade") is not None:
        out.append(f"Grade {facts['grade']}.")
    out += _numbers_sentence(facts)
    return " ".join(out)


def render_surgery(facts: Facts) -> str:
    """Ophora: the action, instrument and phase from the narration segment."""
    action = (facts.get("action") or "").strip().rstrip(".")
    instrument = facts.get("instrument")
    phase = facts.get("phase")
    sentence = action[:1].upper() + action[1:] if action else "Continue the procedure"
    if instrument:
        sentence += f" using the {instrument}"
    if phase:
        sentence += f" during the {phase} phase"
    return sentence + "."


def render_quality(facts: Facts) -> str:
    """MedQ-UNI: what is degraded and how much, ending with the quality verdict."""
    out = [f"This is {with_article(_subject(facts))}."]
    degradation = facts.get("degradation")
    if degradation:
        kind = str(degradation["type"]).replace("_", " ")
        severity = SEVERITY_WORDS[int(degradation["severity"])]
        detail = []
        if isinstance(degradation.get("psnr_db"), int | float):
            detail.append(f"PSNR {_format_number(degradation['psnr_db'])} dB")
        if isinstance(degradation.get("ssim"), int | float):
            detail.append(f"SSIM {_format_number(degradation['ssim'])}")
        suffix = f" ({', '.join(detail)})" if detail else ""
        out.append(f"The image shows {severity} {kind}{suffix}.")
    out += _findings_sentences(facts)
    if facts.get("quality_verdict"):
        out.append(f"Overall, the quality of this image is {facts['quality_verdict']}.")
    return " ".join(out)


def render_generic(facts: Facts) -> str:
    """IMed and any other family: subject, segmentation targets, findings, grade."""
    out = [f"This is {with_article(_subject(facts))}."]
    if facts.get("mask_targets"):
        out.append(f"Segmented structures: {join_words(facts['mask_targets'])}.")
    out += _findings_sentences(facts)
    if facts.get("grade") is not None:
        out.append(f"Grade {facts['grade']}.")
    out += _numbers_sentence(facts)
    return " ".join(out)


TEMPLATES: dict[str, Callable[[Facts], str]] = {
    "retinalogos": render_fundus,
    "unimed": render_unimed,
    "ophora": render_surgery,
    "medq_uni": render_quality,
    "imed": render_generic,
    "generic": render_generic,
}


def render_template(family: str, facts: Facts) -> str:
    """The grounded base text of ``facts`` for ``family`` (facts must be normalized)."""
    try:
        renderer = TEMPLATES[family]
    except KeyError:
        raise ValueError(f"unknown caption family {family!r}; expected one of {sorted(TEMPLATES)}") from None
    return renderer(facts)
