"""``CaptionStage``: facts -> template -> LLM rewrite -> grounding guard -> caption.

Input columns: ``sample_id`` (string) and ``facts_json`` (string, a JSON facts object;
see :mod:`synthesis.captioning.facts`). Output: the input rows plus ``caption``,
``caption_source`` (``llm`` / ``template`` / ``cache``) and ``caption_provenance_json``
(model id, prompt id, attempts with their grounding problems, and why the kept text
was kept). Rows with bad facts become ``Reject(reason="bad_facts")``.

Per batch: cached keys are served from the cache without a model call; the rest are
rendered by the family template, rewritten by the backend in one batched call, and
checked by the guard; failures are retried once in one batched call with the problems
stated in the prompt; what still fails keeps the template text. A per-run cap on
generated tokens (per stage instance, i.e. per worker) sends the remaining samples to
the template, recorded as ``token_cap``; a backend failure sends the batch to the
template, recorded as ``backend_error``. Neither of those is cached, so the next run
tries the model again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from curation.stages import Reject, Stage, StageOutput
from synthesis.captioning.backends import (
    BackendConfig,
    CaptionBackend,
    SamplingConfig,
    make_backend,
)
from synthesis.captioning.cache import CachedCaption, CaptionCache, cache_key
from synthesis.captioning.facts import Facts, FactsError, facts_sha256, parse_facts
from synthesis.captioning.grounding import check_grounding, load_synonyms
from synthesis.captioning.prompts import (
    PromptTemplate,
    build_messages,
    build_retry_messages,
    load_prompt,
)
from synthesis.captioning.templates import TEMPLATES, render_template

log = logging.getLogger(__name__)

#: bump when the guard's rules change: it is part of the cache key
GUARD_VERSION = "1"
OUTPUT_COLUMNS: tuple[str, ...] = ("caption", "caption_source", "caption_provenance_json")


@dataclasses.dataclass(frozen=True)
class CaptionProgress:
    """Reported after every batch (to the ``progress`` callback, else to the log)."""

    batches: int
    samples: int
    from_llm: int
    from_template: int
    from_cache: int
    rejected: int
    generated_tokens: int
    token_cap: int | None


@dataclasses.dataclass
class _Item:
    facts: Facts
    base_text: str
    key: str
    template_problems: list[str]
    attempts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    text: str | None = None
    source: str = "template"
    reason: str = ""
    cache_hit: bool = False
    cacheable: bool = True


class CaptionStage(Stage):
    """Grounded captions for one family, on any backend; see the module docstring."""

    name = "caption"

    def __init__(
        self,
        family: str,
        backend_config: BackendConfig,
        cache_path: str | None = None,
        *,
        sampling: SamplingConfig | None = None,
        prompt_version: str | None = None,
        prompts_dir: str | None = None,
        max_attempts: int = 2,
        max_generated_tokens: int | None = None,
        batch_size: int = 32,
        min_chars: int = 20,
        max_chars: int = 1500,
        progress: Callable[[CaptionProgress], None] | None = None,
    ):
        if family not in TEMPLATES:
            raise ValueError(f"unknown caption family {family!r}; expected one of {sorted(TEMPLATES)}")
        if max_attempts < 0:
            raise ValueError(f"max_attempts must be >= 0, got {max_attempts}")
        self.family = family
        self.backend_config = backend_config
        self.cache_path = cache_path
        self.sampling = sampling or SamplingConfig()
        self.prompt_version = prompt_version
        self.prompts_dir = prompts_dir
        self.max_attempts = max_attempts
        self.max_generated_tokens = max_generated_tokens
        self.batch_size = batch_size
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.progress = progress
        self.resources = backend_config.resources()
        # loaded once per worker in setup(); keeps __init__ cheap and picklable
        self.backend: CaptionBackend | None = None
        self.prompt: PromptTemplate | None = None
        self.cache: CaptionCache | None = None
        self._counts = CaptionProgress(0, 0, 0, 0, 0, 0, 0, max_generated_tokens)
        self._tokens_at_setup = 0

    def params(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "model_id": self.backend_config.identity,
            "backend": self.backend_config.kind,
            "prompt_version": self.prompt_version,
            "sampling": self.sampling.as_dict(),
            "max_attempts": self.max_attempts,
            "max_generated_tokens": self.max_generated_tokens,
        }

    # --- lifecycle ------------------------------------------------------------------
    def setup(self) -> None:
        if self.prompt is None:
            self.prompt = load_prompt(self.family, self.prompt_version, self.prompts_dir)
        if self.cache is None and self.cache_path:
            self.cache = CaptionCache(self.cache_path).open()
        if self.backend is None and self.max_attempts > 0:
            self.backend = make_backend(self.backend_config)
            self._tokens_at_setup = self.backend.stats.generated_tokens

    def teardown(self) -> None:
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    @property
    def tokens_used(self) -> int:
        return 0 if self.backend is None else self.backend.stats.generated_tokens - self._tokens_at_setup

    # --- processing -----------------------------------------------------------------
    def process(self, batch: pa.Table) -> StageOutput:
        self.setup()  # a no-op once set up; lets a bare process() call work too
        missing = [c for c in ("sample_id", "facts_json") if c not in batch.column_names]
        if missing:
            missing_rejects = [
                Reject(f"row:{i}", self.name, "missing_column", f"input has no column(s) {missing}; columns are {batch.column_names}")
                for i in range(batch.num_rows)
            ]
            return StageOutput(batch.slice(0, 0), missing_rejects)
        ids = batch.column("sample_id").to_pylist()
        uris = batch.column("source_uri").to_pylist() if "source_uri" in batch.column_names else [None] * len(ids)
        items: list[_Item] = []
        keep_rows: list[int] = []
        rejects: list[Reject] = []
        for row, facts_json in enumerate(batch.column("facts_json").to_pylist()):
            try:
                facts = parse_facts(facts_json)
            except FactsError as exc:
                uri = uris[row] or f"sample:{ids[row]}"
                rejects.append(Reject(uri, self.name, "bad_facts", f"sample {ids[row]}: {exc}"))
                continue
            keep_rows.append(row)
            items.append(self._new_item(facts))
        self._caption(items)
        out = batch.take(pa.array(keep_rows, type=pa.int64()))
        columns = {
            "caption": pa.array([it.text for it in items], type=pa.string()),
            "caption_source": pa.array(["cache" if it.cache_hit else it.source for it in items], type=pa.string()),
            "caption_provenance_json": pa.array([self._provenance(it) for it in items], type=pa.string()),
        }
        for name, values in columns.items():
            if name in out.column_names:
                out = out.set_column(out.column_names.index(name), name, values)
            else:
                out = out.append_column(name, values)
        self._report(items, len(rejects))
        return StageOutput(out, rejects)

    def _new_item(self, facts: Facts) -> _Item:
        assert self.prompt is not None
        base = render_template(self.family, facts)
        key = cache_key(
            facts=facts_sha256(facts), family=self.family, prompt=self.prompt.prompt_id,
            prompt_sha256=self.prompt.sha256, model=self.backend_config.identity,
            sampling=self.sampling.as_dict(), max_attempts=self.max_attempts,
            synonyms=load_synonyms().version, guard=GUARD_VERSION,
        )
        return _Item(facts, base, key, [])

    def _caption(self, items: list[_Item]) -> None:
        pending = list(items)
        if self.cache is not None and pending:
            hits = self.cache.get_many(it.key for it in pending)
            for it in pending:
                if (hit := hits.get(it.key)) is not None:
                    it.text, it.source, it.cache_hit = hit.caption, hit.kept, True
                    it.reason = json.loads(hit.provenance_json).get("reason", "cached")
                    it.attempts = json.loads(hit.provenance_json).get("attempts", [])
            pending = [it for it in pending if not it.cache_hit]
        # identical facts in one batch are generated once and shared
        leaders: dict[str, _Item] = {}
        followers: list[_Item] = []
        for it in pending:
            if it.key in leaders:
                followers.append(it)
            else:
                leaders[it.key] = it
        pending = list(leaders.values())
        for attempt in range(1, self.max_attempts + 1):
            if not pending:
                break
            pending = self._attempt(pending, attempt)
        for it in leaders.values():
            if it.text is not None:
                continue
            it.text = it.base_text
            it.source = "template"
            # recorded so a template that drifted from the guard's rules is visible
            it.template_problems = check_grounding(it.facts, it.base_text, min_chars=1, max_chars=10**6).problems
            if not it.reason:
                it.reason = (
                    f"failed grounding on {self.max_attempts} attempt(s); kept the template text"
                    if self.max_attempts else "LLM disabled (max_attempts=0); kept the template text"
                )
        for it in followers:
            leader = leaders[it.key]
            it.text, it.source, it.reason = leader.text, leader.source, leader.reason
            it.template_problems = leader.template_problems
            it.attempts, it.cacheable = leader.attempts, leader.cacheable
        if self.cache is not None:
            self.cache.put_many({
                it.key: CachedCaption(str(it.text), it.source, self._provenance(it))
                for it in items if not it.cache_hit and it.cacheable
            })

    def _attempt(self, pending: list[_Item], attempt: int) -> list[_Item]:
        """One batched backend call; returns the items that still need a text."""
        assert self.backend is not None and self.prompt is not None
        allowed = len(pending)
        if self.max_generated_tokens is not None:
            left = max(0, self.max_generated_tokens - self.tokens_used)
            allowed = min(allowed, left // self.sampling.max_tokens)
        capped, pending = pending[allowed:], pending[:allowed]
        for it in capped:
            it.reason = f"token cap of {self.max_generated_tokens} generated tokens per run reached; kept the template text"
            it.cacheable = False
        if not pending:
            return []
        messages = [
            build_messages(self.prompt, it.facts, it.base_text) if not it.attempts
            else build_retry_messages(self.prompt, it.facts, it.base_text, it.attempts[-1]["text"], it.attempts[-1]["problems"])
            for it in pending
        ]
        try:
            texts = self.backend.generate(messages, self.sampling)
        except Exception as exc:  # any backend failure: the batch keeps its templates
            log.warning("caption backend %s failed on %d prompts: %s", self.backend_config.kind, len(pending), exc)
            for it in pending:
                it.reason = f"backend error on attempt {attempt}: {exc}; kept the template text"
                it.cacheable = False
            return []
        still: list[_Item] = []
        for it, text in zip(pending, texts, strict=True):
            result = check_grounding(it.facts, text, min_chars=self.min_chars, max_chars=self.max_chars)
            it.attempts.append({"attempt": attempt, "text": text, "ok": result.ok, "problems": result.problems})
            if result.ok:
                it.text, it.source = text, "llm"
                it.reason = f"passed the grounding guard on attempt {attempt}"
            else:
                still.append(it)
        return still

    def _provenance(self, it: _Item) -> str:
        assert self.prompt is not None
        return json.dumps(
            {
                "family": self.family,
                "kept": it.source,
                "reason": it.reason,
                "cache_hit": it.cache_hit,
                "model_id": self.backend_config.identity,
                "backend": self.backend_config.kind,
                "prompt": self.prompt.prompt_id,
                "prompt_sha256": self.prompt.sha256,
                "synonyms": load_synonyms().version,
                "guard": GUARD_VERSION,
                "sampling": self.sampling.as_dict(),
                "facts_sha256": facts_sha256(it.facts),
                "cache_key": it.key,
                "attempts": it.attempts,
                "template_problems": it.template_problems,
            },
            ensure_ascii=False,
            sort_keys=True,
        )

    def _report(self, items: list[_Item], rejected: int) -> None:
        c = self._counts
        self._counts = CaptionProgress(
            batches=c.batches + 1,
            samples=c.samples + len(items) + rejected,
            from_llm=c.from_llm + sum(1 for it in items if it.source == "llm" and not it.cache_hit),
            from_template=c.from_template + sum(1 for it in items if it.source == "template" and not it.cache_hit),
            from_cache=c.from_cache + sum(1 for it in items if it.cache_hit),
            rejected=c.rejected + rejected,
            generated_tokens=self.tokens_used,
            token_cap=self.max_generated_tokens,
        )
        if self.progress is not None:
            self.progress(self._counts)
        else:
            log.info("captioning %s: %s", self.family, self._counts)

    @property
    def counts(self) -> CaptionProgress:
        return self._counts

    def __getstate__(self) -> dict[str, Any]:
        """Ship configuration only: the model, cache connection and prompt load per worker."""
        state = dict(self.__dict__)
        state.update(backend=None, cache=None, prompt=None)
        return state
