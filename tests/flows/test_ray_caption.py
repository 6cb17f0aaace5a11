"""CaptionStage on a Ray actor pool: the tiny transformers LM is loaded once per actor,
its meaningless text is rejected by the guard, and a second run is served from the cache."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from curation.stages import run_stages_locally
from flows.engines import run_stage_ray
from synthesis.captioning import (
    BackendConfig,
    CaptionCache,
    CaptionStage,
    SamplingConfig,
    normalize_facts,
    render_template,
)
from synthesis.captioning.testing import build_tiny_causal_lm, example_facts


@pytest.fixture(scope="module")
def ray_two_cpus():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"GX_ANALYTICS_ENABLED": "false"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llm-ray"))


def _table() -> pa.Table:
    facts = [f for family in ("retinalogos",) for f in example_facts()[family]]
    facts += [{**f, "laterality": "bilateral"} for f in facts]
    rows = [json.dumps(f) for f in facts] + ['{"modality": "CFP", "findings": "haemorrhage"}']
    return pa.table({"sample_id": [f"s{i}" for i in range(len(rows))], "facts_json": rows})


def _stage(model: str, cache: str) -> CaptionStage:
    config = BackendConfig(kind="transformers", model=model, model_id="tiny-llama-ray", num_threads=1)
    return CaptionStage("retinalogos", config, cache, sampling=SamplingConfig(max_tokens=16), batch_size=3)


def test_caption_stage_on_ray_actor_pool(ray_two_cpus, tiny_model, tmp_path):
    cache = str(tmp_path / "captions.sqlite")
    table = _table()
    first = run_stage_ray(_stage(tiny_model, cache), table, num_actors=2)
    assert first.table.num_rows == 6
    assert [(r.source_uri, r.reason) for r in first.rejects] == [("sample:s6", "bad_facts")]
    assert first.table.column("caption_source").to_pylist() == ["template"] * 6
    provs = [json.loads(p) for p in first.table.column("caption_provenance_json").to_pylist()]
    assert all(len(p["attempts"]) == 2 and not any(a["ok"] for a in p["attempts"]) for p in provs)
    assert all(p["model_id"] == "tiny-llama-ray" and p["prompt"] == "retinalogos.v1" for p in provs)
    # the kept texts are the family templates of the facts
    templates = [render_template("retinalogos", normalize_facts(json.loads(f)))
                 for f in table.column("facts_json").to_pylist()[:6]]
    assert first.table.column("caption").to_pylist() == templates
    with CaptionCache(cache) as c:
        assert len(c) == 6  # both actors wrote to the one SQLite file

    # the next run (here in-process, to count the model's calls) is served from the cache
    again = _stage(tiny_model, cache)
    again.setup()
    backend = again.backend
    second = run_stages_locally([again], table)
    assert backend.stats.calls == 0
    assert second.table.column("caption_source").to_pylist() == ["cache"] * 6
    assert second.table.column("caption").to_pylist() == templates
