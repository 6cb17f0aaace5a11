"""The vLLM backend, run for real only where vLLM (the optional ``.[gpu]`` extra) and a GPU exist."""

from __future__ import annotations

import pytest

from synthesis.captioning import BackendConfig, SamplingConfig, make_backend, vllm_available


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not vllm_available(), reason="vllm is not installed (optional extra: pip install '.[gpu]')")
@pytest.mark.skipif(vllm_available() and not _cuda(), reason="vllm is installed but no CUDA device is visible")
def test_vllm_backend_generates_one_text_per_conversation(tiny_model_path):
    backend = make_backend(BackendConfig(kind="vllm", model=tiny_model_path, gpu_memory_utilization=0.2,
                                         max_model_len=2048, dtype="float16"))
    conversations = [[{"role": "user", "content": f"Describe fundus photograph {i}."}] for i in range(4)]
    texts = backend.generate(conversations, SamplingConfig(max_tokens=8, seed=0))
    assert len(texts) == 4 and all(isinstance(t, str) for t in texts)
    assert backend.stats.calls == 1 and 0 < backend.stats.generated_tokens <= 32


def test_vllm_backend_without_vllm_says_how_to_install():
    if vllm_available():
        pytest.skip("vllm is installed here")
    from synthesis.captioning import BackendError

    with pytest.raises(BackendError, match=r"pip install 'medcurate\[gpu\]'"):
        make_backend(BackendConfig(kind="vllm", model="/models/none"))
