"""Weighted mixtures of datasets/versions with deterministic sampling.

A mixture draws each next sample's *component* with probabilities proportional to the
weights, from a generator seeded by ``(seed, epoch, stream)``; each component is itself
a :class:`~catalogs.torch_loader.CatalogIterableDataset` split by row group across
ranks × workers, read in its own shuffled order. So:

* the realised proportions converge to the weights (law of large numbers), and a run is
  exactly reproducible given (seed, epoch, world_size, num_workers);
* a component that runs out before the epoch's quota restarts on its next pass
  (oversampling, like GMAI-VL's ``sample_ratio`` > 1); a stream that gets none of a
  component's row groups (fewer row groups than streams) reads the whole component in
  its own order, so every stream keeps every weight; only an empty component is dropped
  (the others' weights renormalise);
* an epoch has ``num_samples`` items in total over all streams (default: the sum of the
  components' planned rows), split as evenly as possible between streams.

GMAI-VL's per-source ``sample_ratio`` r for a source of n samples is weight ``r * n``
with ``num_samples = Σ r * n`` (:func:`weights_from_sample_ratios`). A curriculum
(UniMedVL's stages) is one mixture per stage, or one dataset filtered on
``curriculum_stage``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from catalogs.reading import FilterLike
from catalogs.torch_loader import CatalogIterableDataset, StatefulStreams

MIXTURE_KEY = "mixture_component"


@dataclasses.dataclass(frozen=True)
class MixtureComponent:
    """One ingredient: a dataset at a version (None = latest when the mixture is made)."""

    name: str
    version: str | None = None
    weight: float = 1.0
    filter: FilterLike = None
    label: str | None = None  # how items name their component; default ``name@version``


def weights_from_sample_ratios(sizes: Mapping[str, int], ratios: Mapping[str, float]) -> tuple[dict[str, float], int]:
    """(weights, num_samples) reproducing per-source ``sample_ratio`` (GMAI-VL style).

    A source with n samples and ratio r contributes r * n samples per epoch on average.
    """
    missing = sorted(set(ratios) - set(sizes))
    if missing:
        raise KeyError(f"sample ratios for unknown sources {missing}; known: {sorted(sizes)}")
    weights = {k: float(ratios.get(k, 1.0)) * float(n) for k, n in sizes.items()}
    return weights, int(round(sum(weights.values())))


class MixtureIterableDataset(StatefulStreams):
    """Items drawn from several catalog datasets in proportion to weights."""

    def __init__(
        self,
        components: Sequence[CatalogIterableDataset],
        weights: Sequence[float],
        *,
        labels: Sequence[str] | None = None,
        num_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__(rank=rank, world_size=world_size, seed=seed)
        if not components or len(components) != len(weights):
            raise ValueError(f"need one weight per component: {len(components)} components, {len(weights)} weights")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"mixture weights must be >= 0 and not all 0, got {list(weights)}")
        for component in components:
            if (component.rank, component.world_size) != (rank, world_size):
                raise ValueError(
                    f"component {component.name} is split for rank {component.rank}/{component.world_size}, "
                    f"the mixture for {rank}/{world_size}"
                )
        self.components = list(components)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.labels = list(labels) if labels else [f"{c.name}@{c.version}" for c in components]
        self.num_samples = num_samples if num_samples is not None else sum(c.planned_rows for c in components)

    def __repr__(self) -> str:
        parts = ", ".join(f"{label}:{w:g}" for label, w in zip(self.labels, self.weights, strict=True))
        return f"MixtureIterableDataset({parts}; {self.num_samples} samples/epoch, seed {self.seed})"

    def quota(self, stream: int, streams: int) -> int:
        """Samples this stream yields per epoch (num_samples split as evenly as possible)."""
        return self.num_samples // streams + (1 if stream < self.num_samples % streams else 0)

    def iter_stream(self, stream: int, streams: int, epoch_key: Sequence[int], skip: int) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng([self.seed, *epoch_key, stream, 2])
        sources = [self._cycle(i, stream, streams, epoch_key) for i in range(len(self.components))]
        active = [i for i in range(len(self.components)) if self.weights[i] > 0]
        produced, quota = 0, self.quota(stream, streams)
        while produced < quota and active:
            probabilities = self.weights[active] / self.weights[active].sum()
            choice = active[int(rng.choice(len(active), p=probabilities))]
            row = next(sources[choice], None)
            if row is None:  # nothing at all for this stream in this component
                active.remove(choice)
                continue
            if produced >= skip:
                item = self.components[choice].make_item(row)
                item[MIXTURE_KEY] = self.labels[choice]
                yield item
            produced += 1

    def _cycle(self, index: int, stream: int, streams: int, epoch_key: Sequence[int]) -> Iterator[dict[str, Any]]:
        """A component's rows for this stream, pass after pass (each pass reshuffled).

        Row groups are split between streams (ranks x workers). A component with fewer
        row groups than streams leaves some streams without any: such a stream reads the
        whole component in its own shuffled order, its rows then repeating across streams
        as an oversampled component's do. Dropping the component there instead would
        shrink its share of the epoch by the streams that lack it (0.25 -> 0.12 with 2
        workers and one row group). Only a component without any row is dropped."""
        component = self.components[index]
        for repeat in range(2**31):
            key = (*epoch_key, index, repeat)
            rows = component.row_stream(stream, streams, key)
            first = next(rows, None)
            if first is None and streams > 1:
                rows = component.row_stream(0, 1, (*key, stream))  # the whole component, this stream's order
                first = next(rows, None)
            if first is None:
                return
            yield first
            yield from rows
