"""Templates state every fact and pass the guard; prompts are versioned files."""

from __future__ import annotations

import pytest

from synthesis.captioning import (
    FAMILIES,
    check_grounding,
    load_prompt,
    normalize_facts,
    render_template,
)
from synthesis.captioning.prompts import PromptError, build_messages, build_retry_messages
from synthesis.captioning.testing import example_facts


@pytest.mark.parametrize("family", sorted(example_facts()))
def test_every_template_is_grounded_in_its_facts(family):
    for raw in example_facts()[family]:
        facts = normalize_facts(raw)
        text = render_template(family, facts)
        assert check_grounding(facts, text).ok, (text, check_grounding(facts, text).problems)
        for finding in facts["findings"]:
            assert finding in text


def test_template_texts_state_the_facts():
    fundus = render_template("retinalogos", normalize_facts(example_facts()["retinalogos"][0]))
    assert fundus.startswith("Colour fundus photograph of the left eye.")
    assert "microaneurysm (count 4) in the macular region" in fundus
    assert "There is no neovascularisation." in fundus
    assert "grade 2 (moderate non-proliferative diabetic retinopathy)" in fundus
    quality = render_template("medq_uni", normalize_facts(example_facts()["medq_uni"][0]))
    assert quality == ("This is a CT scan of the abdomen. The image shows moderate gaussian noise "
                       "(PSNR 24.5 dB, SSIM 0.71). Overall, the quality of this image is usable.")
    surgery = render_template("ophora", normalize_facts(example_facts()["ophora"][0]))
    assert surgery == ("Insert the phaco tip into the anterior chamber using the phacoemulsification "
                       "handpiece during the phacoemulsification phase.")
    answer = render_template("unimed", normalize_facts(example_facts()["unimed"][0]))
    assert answer.startswith("Yes. This is an X-ray radiograph of the right chest.")


def test_every_family_has_a_versioned_prompt():
    for family in FAMILIES:
        prompt = load_prompt(family)
        assert prompt.version == "v1" and prompt.prompt_id.endswith(".v1")
        assert "{base_text}" in prompt.user and "{problems}" in prompt.retry
    assert load_prompt("imed").name == "generic"


def test_prompt_file_header_must_match_its_name(tmp_path):
    (tmp_path / "retinalogos.v2.txt").write_text("# name: retinalogos\n# version: v1\n=== system\ns\n=== user\nu\n=== retry\nr\n")
    with pytest.raises(PromptError, match="do not match the file name"):
        load_prompt("retinalogos", prompts_dir=tmp_path)
    (tmp_path / "retinalogos.v2.txt").write_text("# name: retinalogos\n# version: v2\n=== system\ns\n=== user\n{base_text}\n=== retry\nr\n")
    (tmp_path / "retinalogos.v10.txt").write_text("# name: retinalogos\n# version: v10\n=== system\ns\n=== user\n{base_text}!\n=== retry\nr\n")
    assert load_prompt("retinalogos", prompts_dir=tmp_path).version == "v10"  # numeric, not lexical
    assert load_prompt("retinalogos", "v2", prompts_dir=tmp_path).user == "{base_text}"


def test_messages_carry_facts_base_text_and_retry_reason():
    prompt = load_prompt("retinalogos")
    facts = normalize_facts(example_facts()["retinalogos"][1])
    base = render_template("retinalogos", facts)
    first = build_messages(prompt, facts, base)
    assert [m["role"] for m in first] == ["system", "user"]
    assert base in first[1]["content"] and '"dr_grade": 1' in first[1]["content"]
    retry = build_retry_messages(prompt, facts, base, "Left eye.", ["wrong laterality: text says left, facts say right"])
    assert [m["role"] for m in retry] == ["system", "user", "assistant", "user"]
    assert "wrong laterality" in retry[-1]["content"] and "Left eye." in retry[-1]["content"]
