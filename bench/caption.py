"""Captioning throughput: the CaptionStage pipeline vs bare backend calls, and the cache.

Measured in one run on the same prompts and the same model (the tiny random Llama by
default, or ``--model PATH`` for a real local transformers model):

* bare: ``backend.generate`` on the first-attempt prompts, in batches of ``--batch-size``
* pipeline: ``CaptionStage`` (facts parsing, template, prompt building, guard, cache
  writes, provenance) with ``max_attempts=1`` so the model does the same work as bare;
  overhead ratio = pipeline seconds / bare seconds
* pipeline with retry (``max_attempts=2``, the default): with the tiny model every
  output fails the guard, so this doubles the model work; reported for reference
* warm: the same stage over the same facts with the cache filled; cache-hit speedup =
  cold pipeline seconds / warm seconds (model load excluded from both)
* guard: ``check_grounding`` calls per second on the pipeline's outputs

Usage: ``python bench/caption.py [--samples 96] [--batch-size 32] [--max-tokens 32]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from curation.stages import run_stages_locally
from synthesis.captioning import (
    BackendConfig,
    CaptionStage,
    SamplingConfig,
    check_grounding,
    load_prompt,
    make_backend,
    normalize_facts,
    render_template,
)
from synthesis.captioning.prompts import build_messages
from synthesis.captioning.testing import build_tiny_causal_lm, example_facts


def varied_fundus_facts(n: int) -> list[dict]:
    """``n`` distinct fundus facts (eye, lesion counts and cup-to-disc ratio vary)."""
    base = example_facts()["retinalogos"]
    out = []
    for i in range(n):
        facts = json.loads(json.dumps(base[i % len(base)]))
        facts["laterality"] = ("left", "right", "bilateral")[i % 3]
        facts["numbers"] = {"cup_to_disc_ratio": round(0.2 + (i % 60) / 100, 2), "image_index": i}
        out.append(facts)
    return out


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for bare, cold and warm runs")
    parser.add_argument("--model", default=None, help="local transformers model folder (default: build the tiny model)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-caption-"))
    model = args.model or build_tiny_causal_lm(work / "tiny-llm")
    config = BackendConfig(kind="transformers", model=model, model_id="bench-model", num_threads=args.threads)
    sampling = SamplingConfig(max_tokens=args.max_tokens, seed=0)
    facts = varied_fundus_facts(args.samples)
    table = pa.table({"sample_id": [f"s{i}" for i in range(len(facts))], "facts_json": [json.dumps(f) for f in facts]})

    # bare backend on the first-attempt prompts
    backend = make_backend(config)
    prompt = load_prompt("retinalogos")
    normalized = [normalize_facts(f) for f in facts]
    messages = [build_messages(prompt, f, render_template("retinalogos", f)) for f in normalized]
    backend.generate(messages[:2], sampling)  # warm-up

    def bare() -> float:
        seconds, _ = timed(lambda: [backend.generate(messages[i : i + args.batch_size], sampling)
                                    for i in range(0, len(messages), args.batch_size)])
        return seconds

    def pipeline(cache: str, attempts: int) -> tuple[float, pa.Table]:
        stage = CaptionStage("retinalogos", config, cache, sampling=sampling, batch_size=args.batch_size,
                             max_attempts=attempts, progress=lambda p: None)
        stage.setup()  # model load outside the timing, as for bare
        seconds, out = timed(lambda: run_stages_locally([stage], table))
        return seconds, out.table

    # bare and cold pipeline interleaved, best of --repeats each (a shared machine is noisy)
    bare_runs, cold_runs = [], []
    for r in range(args.repeats):
        bare_runs.append(bare())
        cold_runs.append(pipeline(str(work / f"cache-cold-{r}.sqlite"), attempts=1))
    backend.close()
    bare_s = min(bare_runs)
    cold_s, cold = min(cold_runs, key=lambda run: run[0])
    retry_s, _ = pipeline(str(work / "cache-retry.sqlite"), attempts=2)
    warm_s, warm = min((pipeline(str(work / "cache-cold-0.sqlite"), attempts=1) for _ in range(args.repeats)),
                       key=lambda run: run[0])
    assert warm.column("caption_source").to_pylist() == ["cache"] * len(facts)
    captions = cold.column("caption").to_pylist()
    check_grounding(normalized[0], captions[0])  # compiles and caches the vocabulary regexes
    guard_s = min(timed(lambda: [check_grounding(f, c) for f, c in zip(normalized, captions, strict=True)])[0]
                  for _ in range(args.repeats))

    n = len(facts)
    results = {
        "samples": n,
        "bare_captions_per_s": n / bare_s,
        "pipeline_captions_per_s": n / cold_s,
        "overhead_ratio": cold_s / bare_s,
        "pipeline_with_retry_captions_per_s": n / retry_s,
        "warm_cache_captions_per_s": n / warm_s,
        "cache_hit_speedup": cold_s / warm_s,
        "guard_checks_per_s": n / guard_s,
    }
    print(f"machine: {platform.machine()} {os.cpu_count()} CPU cores, torch threads {args.threads}, no GPU")
    print(f"model: {'tiny random Llama (hidden 32, 2 layers)' if not args.model else args.model}; "
          f"batch {args.batch_size}, max_tokens {args.max_tokens}")
    for key, value in results.items():
        print(f"{key:36s} {value:10.2f}")
    return results


if __name__ == "__main__":
    main()
