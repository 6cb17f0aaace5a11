"""Grounded LLM captioning: facts -> template -> LLM rewrite -> grounding guard.

Public API (see docs/captioning.md):

* :func:`check_grounding` / :class:`GroundingResult`: is a caption grounded in its facts?
* :func:`render_template`: the deterministic grounded base text of a family.
* :func:`load_prompt`: the versioned per-family prompt.
* :class:`BackendConfig`, :class:`SamplingConfig`, :func:`make_backend`,
  :class:`CaptionBackend`: vLLM / OpenAI-compatible HTTP / transformers backends.
* :class:`CaptionCache`: the persistent SQLite caption cache.
* :class:`CaptionStage`: the Stage over Arrow tables (``sample_id``, ``facts_json``).
"""

from synthesis.captioning.backends import (
    BackendConfig,
    BackendError,
    CaptionBackend,
    SamplingConfig,
    make_backend,
    vllm_available,
)
from synthesis.captioning.cache import CaptionCache
from synthesis.captioning.facts import FactsError, normalize_facts, parse_facts
from synthesis.captioning.grounding import GroundingResult, check_grounding, load_synonyms
from synthesis.captioning.prompts import PromptTemplate, load_prompt
from synthesis.captioning.stage import CaptionProgress, CaptionStage
from synthesis.captioning.templates import TEMPLATES, render_template

FAMILIES: tuple[str, ...] = tuple(TEMPLATES)

__all__ = [
    "FAMILIES",
    "BackendConfig",
    "BackendError",
    "CaptionBackend",
    "CaptionCache",
    "CaptionProgress",
    "CaptionStage",
    "FactsError",
    "GroundingResult",
    "PromptTemplate",
    "SamplingConfig",
    "check_grounding",
    "load_prompt",
    "load_synonyms",
    "make_backend",
    "normalize_facts",
    "parse_facts",
    "render_template",
    "vllm_available",
]
