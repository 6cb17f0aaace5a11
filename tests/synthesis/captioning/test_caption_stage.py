"""CaptionStage end to end on the real transformers CPU path (a tiny random LM).

The tiny model's text is meaningless, so every LLM attempt must fail the guard and the
sample must keep its template text; a scripted backend covers the accepting path.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from curation.stages import run_stages_locally
from synthesis.captioning import (
    BackendConfig,
    CaptionBackend,
    CaptionCache,
    CaptionStage,
    SamplingConfig,
    check_grounding,
    normalize_facts,
    render_template,
)
from synthesis.captioning.testing import example_facts

SAMPLING = SamplingConfig(max_tokens=24, seed=0)


def _stage(model_path: str, cache_path, **kwargs) -> CaptionStage:
    # one torch thread: the tiny model is faster without thread contention on 2 cores
    config = BackendConfig(kind="transformers", model=model_path, model_id="tiny-llama-test", num_threads=1)
    return CaptionStage("retinalogos", config, str(cache_path) if cache_path else None,
                        sampling=SAMPLING, batch_size=4, **kwargs)


def _provenance(table: pa.Table) -> list[dict]:
    return [json.loads(p) for p in table.column("caption_provenance_json").to_pylist()]


def test_meaningless_llm_text_is_rejected_and_template_kept(tiny_model_path, fundus_table, tmp_path):
    stage = _stage(tiny_model_path, tmp_path / "cache.sqlite")
    stage.setup()
    backend = stage.backend
    out = run_stages_locally([stage], fundus_table)
    # 6 rows in batches of 4 and 2: one first-attempt call and one retry call per batch
    assert backend.stats.calls == 4 and backend.stats.prompts == 12
    assert out.rejects == [] and out.table.num_rows == 6
    assert out.table.column("caption_source").to_pylist() == ["template"] * 6
    templates = [render_template("retinalogos", normalize_facts(json.loads(f)))
                 for f in fundus_table.column("facts_json").to_pylist()]
    assert out.table.column("caption").to_pylist() == templates
    for prov, facts_json in zip(_provenance(out.table), fundus_table.column("facts_json").to_pylist(), strict=True):
        assert prov["kept"] == "template" and prov["model_id"] == "tiny-llama-test"
        assert prov["prompt"] == "retinalogos.v1" and prov["backend"] == "transformers"
        assert [a["attempt"] for a in prov["attempts"]] == [1, 2]
        for attempt in prov["attempts"]:
            assert not attempt["ok"] and attempt["problems"]
            # the recorded verdict is the guard's verdict on the recorded text
            assert check_grounding(json.loads(facts_json), attempt["text"]).problems == attempt["problems"]
        assert "failed grounding on 2 attempt(s)" in prov["reason"]
        assert prov["template_problems"] == []


def test_second_run_is_served_from_cache_with_zero_model_calls(tiny_model_path, fundus_table, tmp_path):
    cache_path = tmp_path / "nested" / "cache.sqlite"
    first = run_stages_locally([_stage(tiny_model_path, cache_path)], fundus_table)
    second_stage = _stage(tiny_model_path, cache_path)
    second_stage.setup()
    backend = second_stage.backend
    second = run_stages_locally([second_stage], fundus_table)
    assert backend.stats.calls == 0 and backend.stats.prompts == 0
    assert second.table.column("caption_source").to_pylist() == ["cache"] * 6
    assert second.table.column("caption").to_pylist() == first.table.column("caption").to_pylist()
    assert all(p["cache_hit"] and p["kept"] == "template" for p in _provenance(second.table))
    # six distinct facts -> six cache rows; another model id misses the cache
    with CaptionCache(str(cache_path)) as cache:
        assert len(cache) == 6
    other = CaptionStage("retinalogos", BackendConfig(kind="transformers", model=tiny_model_path, model_id="other", num_threads=1),
                         str(cache_path), sampling=SAMPLING, batch_size=4)
    other.setup()
    other_backend = other.backend
    run_stages_locally([other], fundus_table.slice(0, 1))
    assert other_backend.stats.prompts == 2  # first attempt and retry: a miss
    with CaptionCache(str(cache_path)) as cache:
        assert len(cache) == 7


def test_identical_facts_in_a_batch_are_generated_once(tiny_model_path, tmp_path):
    facts = json.dumps(example_facts()["retinalogos"][0])
    table = pa.table({"sample_id": ["a", "b", "c"], "facts_json": [facts] * 3})
    stage = _stage(tiny_model_path, None, max_attempts=1)
    stage.setup()
    backend = stage.backend
    out = run_stages_locally([stage], table)
    assert backend.stats.prompts == 1
    assert out.table.column("sample_id").to_pylist() == ["a", "b", "c"]
    assert len(set(out.table.column("caption").to_pylist())) == 1


class ScriptedBackend(CaptionBackend):
    """Answers from a script: (first attempt text, retry text) per facts index, or raises."""

    def __init__(self, replies: list[str] | Exception):
        super().__init__(BackendConfig(kind="transformers", model="scripted"))
        self.replies = replies
        self.seen: list[list[dict]] = []

    def _generate(self, prompts, sampling):
        self.seen += prompts
        if isinstance(self.replies, Exception):
            raise self.replies
        texts = [self.replies.pop(0) for _ in prompts]
        return texts, sum(len(t.split()) for t in texts)


def _one_fundus_table() -> pa.Table:
    facts = example_facts()["retinalogos"][1]  # right eye, microaneurysms, mild NPDR
    return pa.table({"sample_id": ["s1"], "facts_json": [json.dumps(facts)]})


def test_retry_states_the_problems_and_a_grounded_retry_is_kept(tmp_path):
    stage = _stage("unused", None)
    stage.backend = ScriptedBackend([
        "Right eye with microaneurysms and cotton wool spots; mild NPDR.",   # invented finding
        "Right eye with a few microaneurysms and no haemorrhages or exudates: mild NPDR.",
    ])
    out = stage.process(_one_fundus_table())
    assert out.table.column("caption_source").to_pylist() == ["llm"]
    assert out.table.column("caption").to_pylist() == [
        "Right eye with a few microaneurysms and no haemorrhages or exudates: mild NPDR."]
    prov = _provenance(out.table)[0]
    assert [a["ok"] for a in prov["attempts"]] == [False, True]
    assert "passed the grounding guard on attempt 2" in prov["reason"]
    retry_prompt = stage.backend.seen[1]
    assert retry_prompt[-2] == {"role": "assistant", "content": "Right eye with microaneurysms and cotton wool spots; mild NPDR."}
    assert "invented finding" in retry_prompt[-1]["content"] and "cotton wool spot" in retry_prompt[-1]["content"]


def test_backend_failure_falls_back_without_crashing_and_is_not_cached(tmp_path):
    stage = _stage("unused", tmp_path / "c.sqlite")
    stage.backend = ScriptedBackend(RuntimeError("CUDA out of memory"))
    out = stage.process(_one_fundus_table())
    assert out.table.column("caption_source").to_pylist() == ["template"]
    assert "backend error on attempt 1: CUDA out of memory" in _provenance(out.table)[0]["reason"]
    stage.teardown()
    with CaptionCache(str(tmp_path / "c.sqlite")) as cache:
        assert len(cache) == 0


def test_token_cap_sends_the_rest_to_the_template(tiny_model_path, fundus_table, tmp_path):
    progress = []
    # room for exactly 3 prompts of max_tokens each, no retries
    stage = _stage(tiny_model_path, tmp_path / "cap.sqlite", max_attempts=1,
                   max_generated_tokens=3 * SAMPLING.max_tokens, progress=progress.append)
    stage.setup()
    backend = stage.backend
    out = run_stages_locally([stage], fundus_table)
    assert backend.stats.prompts == 3 and backend.stats.generated_tokens <= 3 * SAMPLING.max_tokens
    reasons = [p["reason"] for p in _provenance(out.table)]
    assert sum("token cap of 72" in r for r in reasons) == 3
    templates = [render_template("retinalogos", normalize_facts(json.loads(f)))
                 for f in fundus_table.column("facts_json").to_pylist()]
    assert out.table.column("caption").to_pylist() == templates
    assert [p.batches for p in progress] == [1, 2]
    assert progress[-1].samples == 6 and progress[-1].from_template == 6 and progress[-1].token_cap == 72


def test_bad_facts_are_rejected_with_reason(tiny_model_path, tmp_path):
    good = json.dumps(example_facts()["retinalogos"][0])
    table = pa.table({
        "sample_id": ["ok", "not-json", "bad-laterality", "contradictory"],
        "source_uri": ["a.png", "b.png", "c.png", "d.png"],
        "facts_json": [good, "{not json", json.dumps({"modality": "CFP", "laterality": "up"}),
                       json.dumps({"modality": "CFP", "findings": ["drusen"], "absent_findings": ["drusen"]})],
    })
    out = run_stages_locally([_stage(tiny_model_path, None, max_attempts=0)], table)
    assert out.table.column("sample_id").to_pylist() == ["ok"]
    assert [(r.source_uri, r.reason) for r in out.rejects] == [
        ("b.png", "bad_facts"), ("c.png", "bad_facts"), ("d.png", "bad_facts")]
    assert "laterality" in out.rejects[1].detail and "'up'" in out.rejects[1].detail
    assert "both present and absent" in out.rejects[2].detail


def test_remote_fsspec_cache_round_trip(fundus_table):
    import fsspec

    url = "memory://captions/cache.sqlite"
    stage = _stage("unused", url)
    stage.backend = ScriptedBackend(["Meaningless."] * 12)
    run_stages_locally([stage], fundus_table)
    assert fsspec.filesystem("memory").exists("/captions/cache.sqlite")
    again = _stage("unused", url)
    again.backend = ScriptedBackend(RuntimeError("must not be called"))
    out = run_stages_locally([again], fundus_table)
    assert out.table.column("caption_source").to_pylist() == ["cache"] * 6


def test_stage_declares_resources_per_backend():
    assert _stage("m", None).resources.gpus == 0
    vllm = CaptionStage("ophora", BackendConfig(kind="vllm", model="m", tensor_parallel_size=2))
    assert vllm.resources.gpus == 2
    with pytest.raises(ValueError, match="unknown caption family"):
        CaptionStage("radiology", BackendConfig(kind="vllm", model="m"))
