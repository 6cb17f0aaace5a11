"""The OpenAI-compatible HTTP backend against our loopback server serving the tiny model."""

from __future__ import annotations

import json

import httpx
import pytest

from curation.stages import run_stages_locally
from synthesis.captioning import (
    BackendConfig,
    BackendError,
    CaptionStage,
    SamplingConfig,
    make_backend,
)
from synthesis.captioning.openai_server import make_server

SAMPLING = SamplingConfig(max_tokens=16, seed=0)
CONVERSATIONS = [
    [{"role": "system", "content": "Rewrite."}, {"role": "user", "content": f"Fundus photograph number {i}."}]
    for i in range(3)
]


@pytest.fixture(scope="module")
def server(tiny_model_path):
    srv = make_server(tiny_model_path, model_name="tiny-llama", num_threads=1).start()
    yield srv
    srv.stop()


def _config(server, **kwargs) -> BackendConfig:
    return BackendConfig(kind="openai", model="tiny-llama", base_url=server.base_url, timeout_s=10,
                         backoff_s=0.01, **kwargs)


def test_server_speaks_the_openai_chat_api(server):
    models = httpx.get(server.base_url + "/models").json()
    assert models["data"][0]["id"] == "tiny-llama"
    reply = httpx.post(server.base_url + "/chat/completions",
                       json={"model": "tiny-llama", "messages": CONVERSATIONS[0], "max_tokens": 8}).json()
    assert reply["object"] == "chat.completion"
    assert isinstance(reply["choices"][0]["message"]["content"], str)
    assert 0 < reply["usage"]["completion_tokens"] <= 8
    bad = httpx.post(server.base_url + "/chat/completions", json={"model": "tiny-llama", "messages": []})
    assert bad.status_code == 400 and "messages" in bad.json()["error"]["message"]


def test_backend_sends_each_conversation_with_bounded_concurrency(server):
    backend = make_backend(_config(server, max_concurrency=2))
    before = server.chat_requests
    texts = backend.generate(CONVERSATIONS, SAMPLING)
    backend.close()
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert server.chat_requests - before == 3
    assert backend.stats.calls == 1 and backend.stats.prompts == 3 and 0 < backend.stats.generated_tokens <= 48


def test_backend_retries_server_errors_with_backoff(tiny_model_path):
    with make_server(tiny_model_path, model_name="tiny-llama", num_threads=1, fail_first=2) as flaky:
        backend = make_backend(_config(flaky, max_concurrency=1, max_retries=3))
        texts = backend.generate(CONVERSATIONS[:1], SAMPLING)
        assert len(texts) == 1 and backend.retries == 2 and flaky.chat_requests == 3
        backend.close()
    with make_server(tiny_model_path, model_name="tiny-llama", num_threads=1, fail_first=5) as down:
        backend = make_backend(_config(down, max_concurrency=1, max_retries=1))
        with pytest.raises(BackendError, match="failed after 2 attempts; last error: HTTP 503"):
            backend.generate(CONVERSATIONS[:1], SAMPLING)
        backend.close()


def test_unreachable_server_is_a_backend_error_and_the_stage_falls_back():
    config = BackendConfig(kind="openai", model="m", base_url="http://127.0.0.1:9/v1", timeout_s=1,
                           max_retries=1, backoff_s=0.01)
    import pyarrow as pa

    table = pa.table({"sample_id": ["x"], "facts_json": [json.dumps(
        {"modality": "XR", "body_part": "chest", "findings": ["pneumothorax"], "laterality": "right"})]})
    out = run_stages_locally([CaptionStage("unimed", config, sampling=SAMPLING)], table)
    prov = json.loads(out.table.column("caption_provenance_json")[0].as_py())
    assert out.table.column("caption_source").to_pylist() == ["template"]
    assert "backend error on attempt 1" in prov["reason"] and "ConnectError" in prov["reason"]
    assert out.table.column("caption").to_pylist() == ["This is an X-ray radiograph of the right chest. Findings: pneumothorax."]


def test_caption_stage_over_http(server, tmp_path):
    import pyarrow as pa

    from synthesis.captioning.testing import example_facts

    facts = example_facts()["ophora"]
    table = pa.table({"sample_id": ["c1", "c2"], "facts_json": [json.dumps(f) for f in facts]})
    stage = CaptionStage("ophora", _config(server, max_concurrency=2), str(tmp_path / "c.sqlite"), sampling=SAMPLING)
    out = run_stages_locally([stage], table)
    provs = [json.loads(p) for p in out.table.column("caption_provenance_json").to_pylist()]
    assert out.table.column("caption_source").to_pylist() == ["template", "template"]
    assert all(p["backend"] == "openai" and p["model_id"] == "tiny-llama" and len(p["attempts"]) == 2 for p in provs)
    assert out.table.column("caption")[0].as_py().startswith("Insert the phaco tip")
