"""LLM backends behind one interface: vLLM offline, OpenAI-compatible HTTP, transformers.

``CaptionBackend.generate(prompts, sampling) -> list[str]`` takes a batch of chat
conversations (lists of ``{"role", "content"}`` messages) and returns one text per
conversation, in order. Each backend counts its calls, prompts and generated tokens in
``stats`` (the stage uses them for the per-run token cap and tests use them to prove a
cached run makes no model call).

* ``vllm``: ``vllm.LLM`` offline engine on GPUs, chat template applied by vLLM,
  tensor parallel configurable. vLLM is the optional extra ``.[gpu]`` and is imported
  only when this backend is built.
* ``openai``: any ``/v1/chat/completions`` server (a ``vllm serve`` fleet, or our
  ``openai_server`` dev tool) with bounded concurrency, retries with exponential
  backoff on timeouts / 429 / 5xx, and timeouts.
* ``transformers``: ``AutoModelForCausalLM`` from a local path on CPU (or one GPU),
  batched ``generate`` with left padding; the tokenizer's chat template when it has
  one, a plain ``System:/User:/Assistant:`` format otherwise.

Model names and paths are configuration: nothing downloads at run time
(``local_files_only=True``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from curation.stages import Resources

log = logging.getLogger(__name__)

Message = dict[str, str]
BackendKind = Literal["transformers", "openai", "vllm"]


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Decoding parameters; all of them are part of the cache key."""

    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 160
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"invalid sampling config {self}: need max_tokens >= 1, temperature >= 0, 0 < top_p <= 1")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class BackendConfig:
    """Which model, served how. Picklable: the stage ships it to workers."""

    kind: BackendKind
    #: local model folder (transformers, vllm) or served model name (openai)
    model: str
    #: identity recorded in provenance and in the cache key (default: ``model``)
    model_id: str | None = None
    #: openai: ``http://host:port/v1``
    base_url: str | None = None
    #: openai: name of the environment variable holding the API key (never the key)
    api_key_env: str | None = None
    #: openai: requests in flight per actor
    max_concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 0.5
    #: transformers: prompts per ``model.generate`` call
    generation_batch_size: int = 16
    #: transformers: ``cpu`` or ``cuda``; torch threads on CPU (None: torch default)
    device: str = "cpu"
    num_threads: int | None = None
    #: vllm engine arguments
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in ("transformers", "openai", "vllm"):
            raise ValueError(f"backend kind must be transformers, openai or vllm, got {self.kind!r}")
        if self.kind == "openai" and not self.base_url:
            raise ValueError("the openai backend needs base_url, e.g. http://127.0.0.1:8000/v1")
        if self.max_concurrency < 1 or self.generation_batch_size < 1 or self.tensor_parallel_size < 1:
            raise ValueError(f"concurrency, batch size and tensor_parallel_size must be >= 1 in {self}")

    @property
    def identity(self) -> str:
        return self.model_id or self.model

    def resources(self) -> Resources:
        """What one worker holding this backend needs."""
        if self.kind == "vllm":
            return Resources(cpus=2, gpus=float(self.tensor_parallel_size), memory_gb=16)
        if self.kind == "transformers":
            gpus = 1.0 if self.device.startswith("cuda") else 0.0
            return Resources(cpus=1, gpus=gpus, memory_gb=4)
        return Resources(cpus=1, memory_gb=1)


class BackendError(RuntimeError):
    """The backend could not produce texts (server down, bad response, OOM...)."""


@dataclasses.dataclass
class BackendStats:
    calls: int = 0
    prompts: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0


class CaptionBackend(ABC):
    """Batch chat generation; one instance per worker, built in ``Stage.setup``."""

    def __init__(self, config: BackendConfig):
        self.config = config
        self.stats = BackendStats()

    def generate(self, prompts: Sequence[list[Message]], sampling: SamplingConfig) -> list[str]:
        """One text per conversation, in order; counts the call in ``stats``."""
        if not prompts:
            return []
        start = time.perf_counter()
        texts, tokens = self._generate(list(prompts), sampling)
        if len(texts) != len(prompts):
            raise BackendError(f"{type(self).__name__} returned {len(texts)} texts for {len(prompts)} prompts")
        self.stats.calls += 1
        self.stats.prompts += len(prompts)
        self.stats.generated_tokens += tokens
        self.stats.seconds += time.perf_counter() - start
        return texts

    @abstractmethod
    def _generate(self, prompts: list[list[Message]], sampling: SamplingConfig) -> tuple[list[str], int]:
        """Texts and the number of tokens generated for them."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model or connection."""


def plain_chat_format(messages: list[Message]) -> str:
    """A chat rendering for tokenizers without a chat template."""
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


class TransformersBackend(CaptionBackend):
    """Hugging Face causal LM from a local folder; the CPU path tests run for real."""

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._threads_before = torch.get_num_threads()
        if config.num_threads:
            torch.set_num_threads(config.num_threads)  # process-wide: restored in close()
        if not os.path.isdir(config.model):
            raise BackendError(f"transformers backend: model folder {config.model!r} does not exist (nothing is downloaded)")
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(config.model, local_files_only=True)
        self.tokenizer.padding_side = "left"  # decoder-only models continue from the right end
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = "auto" if config.dtype == "auto" else getattr(torch, config.dtype)
        # typed as Any: transformers' stubs do not describe the auto classes' instances
        loader: Any = AutoModelForCausalLM
        self.model: Any = loader.from_pretrained(config.model, local_files_only=True, dtype=dtype)
        self.model.to(config.device)
        self.model.eval()
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, messages: list[Message]) -> str:
        if self.has_chat_template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return str(text)
        return plain_chat_format(messages)

    def _generate(self, prompts: list[list[Message]], sampling: SamplingConfig) -> tuple[list[str], int]:
        torch = self._torch
        texts: list[str] = []
        tokens = 0
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        size = self.config.generation_batch_size
        for offset in range(0, len(prompts), size):
            chunk = [self.render(m) for m in prompts[offset : offset + size]]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=not self.has_chat_template)
            enc = {k: v.to(self.config.device) for k, v in enc.items()}
            with torch.inference_mode():
                out = self.model.generate(
                    **enc,
                    max_new_tokens=sampling.max_tokens,
                    do_sample=sampling.temperature > 0,
                    temperature=sampling.temperature if sampling.temperature > 0 else None,
                    top_p=sampling.top_p if sampling.temperature > 0 else None,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                )
            new = out[:, enc["input_ids"].shape[1] :]
            pad_id = self.tokenizer.pad_token_id
            tokens += int((new != pad_id).sum()) if pad_id is not None else int(new.numel())
            texts += [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return texts, tokens

    def close(self) -> None:
        self.model = None
        self._torch.set_num_threads(self._threads_before)


class OpenAIBackend(CaptionBackend):
    """``POST {base_url}/chat/completions`` with bounded concurrency and retries."""

    RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        import httpx

        self._httpx = httpx
        headers = {"Content-Type": "application/json"}
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise BackendError(f"openai backend: environment variable {config.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(max_connections=config.max_concurrency, max_keepalive_connections=config.max_concurrency)
        self.client = httpx.Client(
            base_url=str(config.base_url).rstrip("/"), headers=headers,
            timeout=httpx.Timeout(config.timeout_s), limits=limits,
        )
        self.retries = 0
        self.endpoint = f"{str(config.base_url).rstrip('/')}/chat/completions"

    def _request(self, messages: list[Message], sampling: SamplingConfig) -> tuple[str, int]:
        httpx = self._httpx
        body: dict[str, Any] = {
            "model": self.config.model, "messages": messages, "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature, "top_p": sampling.top_p,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        last = ""
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                self.retries += 1
                time.sleep(self.config.backoff_s * 2 ** (attempt - 1) * (1 + random.random() * 0.25))
            try:
                response = self.client.post("/chat/completions", json=body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in self.RETRY_STATUS:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code != 200:
                raise BackendError(f"{self.endpoint} answered HTTP {response.status_code}: {response.text[:300]}")
            try:
                payload = response.json()
                text = str(payload["choices"][0]["message"]["content"] or "")
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise BackendError(f"malformed chat completion from {self.endpoint}: {response.text[:300]}") from exc
            usage = payload.get("usage") or {}
            return text.strip(), int(usage.get("completion_tokens") or len(text.split()))
        raise BackendError(
            f"{self.endpoint} failed after {self.config.max_retries + 1} attempts; last error: {last}"
        )

    def _generate(self, prompts: list[list[Message]], sampling: SamplingConfig) -> tuple[list[str], int]:
        workers = min(self.config.max_concurrency, len(prompts))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="caption-http") as pool:
            results = list(pool.map(lambda m: self._request(m, sampling), prompts))
        return [text for text, _ in results], sum(n for _, n in results)

    def close(self) -> None:
        self.client.close()


class VLLMBackend(CaptionBackend):
    """vLLM offline engine.

    Written against vLLM's documented offline API (docs.vllm.ai, "Offline Inference";
    pinned as ``vllm==0.33.0`` in the ``gpu`` extra): ``LLM(model, tensor_parallel_size,
    gpu_memory_utilization, max_model_len, dtype, seed)``, ``SamplingParams(temperature,
    top_p, max_tokens, seed)`` and ``LLM.chat(list_of_conversations, sampling_params,
    use_tqdm=False)``, which applies the model's chat template and batches all
    conversations in one engine run; each ``RequestOutput.outputs[0]`` has ``text`` and
    ``token_ids``.
    """

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:  # the optional extra is missing
            raise BackendError("the vllm backend needs the optional extra: pip install 'medcurate[gpu]'") from exc
        self._sampling_params = SamplingParams
        kwargs: dict[str, Any] = {
            "model": config.model,
            "tensor_parallel_size": config.tensor_parallel_size,
            "gpu_memory_utilization": config.gpu_memory_utilization,
            "dtype": config.dtype,
        }
        if config.max_model_len:
            kwargs["max_model_len"] = config.max_model_len
        self.llm = LLM(**kwargs)

    def _generate(self, prompts: list[list[Message]], sampling: SamplingConfig) -> tuple[list[str], int]:
        params = self._sampling_params(
            temperature=sampling.temperature, top_p=sampling.top_p,
            max_tokens=sampling.max_tokens, seed=sampling.seed,
        )
        outputs = self.llm.chat(prompts, params, use_tqdm=False)
        texts = [o.outputs[0].text.strip() for o in outputs]
        return texts, sum(len(o.outputs[0].token_ids) for o in outputs)


def make_backend(config: BackendConfig) -> CaptionBackend:
    """Build the backend ``config.kind`` names (loads the model: call once per worker)."""
    if config.kind == "transformers":
        return TransformersBackend(config)
    if config.kind == "openai":
        return OpenAIBackend(config)
    return VLLMBackend(config)


def vllm_available() -> bool:
    """Whether the optional vLLM extra is importable here."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None
