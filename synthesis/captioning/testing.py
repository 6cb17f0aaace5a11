"""A tiny causal LM built from a config, for tests, the benchmark and the demo.

Random weights (its text is meaningless: the grounding guard must reject it) and a BPE
tokenizer trained here on a small medical corpus, so the real transformers path
(tokenizer, chat template, left-padded batched ``generate``) runs on CPU in well under
a second, without downloading anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthesis.captioning.facts import normalize_facts
from synthesis.captioning.templates import TEMPLATES, render_template

#: a minimal chat template in the Hugging Face Jinja format
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


def example_facts() -> dict[str, list[dict[str, Any]]]:
    """A few realistic facts per family (what converters and recipes produce)."""
    return {
        "retinalogos": [
            {"modality": "CFP", "body_part": "eye", "laterality": "left", "findings": ["haemorrhage", "hard exudate"],
             "absent_findings": ["neovascularisation"], "dr_grade": 2, "dme_risk": 1,
             "lesions": [{"type": "microaneurysm", "count": 4, "location": "macular"}],
             "optic_disc": "well-defined margins, cup-to-disc ratio 0.4", "numbers": {"cup_to_disc_ratio": 0.4}},
            {"modality": "CFP", "body_part": "eye", "laterality": "right", "findings": ["microaneurysm"],
             "absent_findings": ["haemorrhage", "hard exudate"], "dr_grade": 1},
            {"modality": "CFP", "body_part": "eye", "laterality": "right", "findings": ["neovascularisation", "haemorrhage", "venous beading"],
             "absent_findings": [], "dr_grade": 4, "vessels": "tortuous with venous beading"},
        ],
        "unimed": [
            {"modality": "XR", "body_part": "chest", "laterality": "right", "findings": ["pneumothorax"],
             "absent_findings": ["pleural effusion"], "question": "Is there a pneumothorax?", "answer": "yes"},
            {"modality": "XR", "body_part": "knee", "laterality": "left", "findings": ["osteoarthritis"], "grade": 3},
        ],
        "ophora": [
            {"modality": "SURG", "body_part": "eye", "action": "insert the phaco tip into the anterior chamber",
             "instrument": "phacoemulsification handpiece", "phase": "phacoemulsification",
             "narration": "now we go in with the phaco and start sculpting"},
            {"modality": "SURG", "body_part": "eye", "action": "tear a continuous circular opening in the anterior capsule",
             "instrument": "capsulorhexis forceps", "phase": "capsulorhexis", "narration": "we grab the flap and go around"},
        ],
        "medq_uni": [
            {"modality": "CT", "body_part": "abdomen", "degradation": {"type": "gaussian_noise", "severity": 2,
             "psnr_db": 24.5, "ssim": 0.71}, "quality_verdict": "usable"},
            {"modality": "MR", "body_part": "brain", "degradation": {"type": "motion", "severity": 3, "psnr_db": 18.2},
             "quality_verdict": "reject"},
        ],
        "imed": [
            {"modality": "CT", "body_part": "abdomen", "mask_targets": ["liver", "spleen"], "findings": ["tumour"],
             "numbers": {"tumour_diameter_mm": 32}},
        ],
    }


def tiny_corpus() -> list[str]:
    """Sentences to train the tiny tokenizer on: rendered templates plus prompt words."""
    from synthesis.captioning.prompts import load_prompt

    lines = []
    for family, facts_list in example_facts().items():
        for facts in facts_list:
            lines.append(render_template(family, normalize_facts(facts)))
        prompt = load_prompt(family)
        lines += [prompt.system, prompt.user, prompt.retry]
    lines += [f"{family} caption" for family in TEMPLATES]
    return lines * 4


def build_tiny_causal_lm(out_dir: str | Path, *, vocab_size: int = 600, seed: int = 0) -> str:
    """Train a tokenizer, build a 2-layer Llama with hidden size 32, save both to ``out_dir``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(tiny_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    return str(out)
