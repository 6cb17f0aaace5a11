"""Per-source balancing: sampling ratios and caps, as GMAI-VL's ``sample_ratio``.

A mixture of hundreds of sources is dominated by its largest ones unless each source
is resampled: a ratio below 1 keeps that fraction of a source's items, a ratio above 1
repeats them (whole copies, then a seeded remainder), and a cap bounds the result.
Which items are kept is a seeded function of the source name and item keys, so a
rebuild with the same recipe keeps the same items whatever order discovery found them
in. Items sampled out are rejects with reason ``sampled_out`` (every input accounted
for); repeats get ``#repeat=N`` appended to their key so their sample ids stay unique.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from curation.ids import stable_hash
from curation.stages import Reject

STAGE = "balance"


def target_count(available: int, ratio: float, cap: int | None) -> int:
    """How many items a source contributes: ``round(available * ratio)``, at most ``cap``."""
    if ratio <= 0:
        raise ValueError(f"sample_ratio must be > 0, got {ratio}")
    target = int(round(available * ratio))
    if available and target == 0:
        target = 1  # a source named in a recipe contributes at least one item
    return min(target, cap) if cap is not None else target


def balance_items(
    items: Sequence[dict[str, Any]],
    settings: Mapping[str, tuple[float, int | None]],
    *,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], list[Reject]]:
    """Apply each source's (ratio, cap) to its items (``item['source']``); sources without
    settings are kept whole. Returns the kept items (key order) and the sampled-out rejects."""
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        by_source[item["source"]].append(item)
    kept: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    for source, group in sorted(by_source.items()):
        ratio, cap = settings.get(source, (1.0, None))
        group = sorted(group, key=lambda i: i["key"])
        target = target_count(len(group), ratio, cap)
        rng = random.Random(int(stable_hash("balance", seed, source, length=15), 16))
        if target <= len(group):
            chosen = set(rng.sample(range(len(group)), target))
            for index, item in enumerate(group):
                if index in chosen:
                    kept.append(item)
                else:
                    rejects.append(
                        Reject(
                            item["key"],
                            STAGE,
                            "sampled_out",
                            f"{item['key']}: source {source} keeps {target} of {len(group)} items "
                            f"(sample_ratio {ratio:g}, cap {cap}, seed {seed})",
                        )
                    )
            continue
        kept.extend(group)
        full, remainder = divmod(target - len(group), len(group))
        picks = [i for _ in range(full) for i in range(len(group))] + rng.sample(range(len(group)), remainder)
        counter: dict[int, int] = defaultdict(int)
        for index in sorted(picks):
            counter[index] += 1
            kept.append({**group[index], "key": f"{group[index]['key']}#repeat={counter[index]}"})
    kept.sort(key=lambda i: i["key"])
    return kept, rejects
