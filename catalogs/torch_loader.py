"""PyTorch ``IterableDataset`` over a pinned catalog version, for DDP training.

Why our own: torch's samplers split *indices* of a map-style dataset, which would mean
random access into Parquet (one footer + page read per sample), and webdataset-style
loaders split *files*, which leaves ranks idle when a build has few big shards. Here the
unit of work is a Parquet row group (~16 MiB), planned from footers once.

Splitting policy (exactly once per epoch, deterministic):

* every rank plans the same row groups of the same version (the file list is fixed when
  the dataset is made: a later publish changes nothing for it);
* per epoch, the row groups are permuted with ``rng(seed, epoch)`` (identical on every
  rank) and dealt round-robin to the ``world_size × num_workers`` streams; stream
  ``rank * num_workers + worker_id`` takes positions ``stream, stream + S, ...``;
* no padding and no duplication: streams get whole row groups, so they can differ by up
  to one row group's rows. For DDP steps that must match across ranks, stop each epoch
  after a fixed number of steps (``min_rows_per_rank()`` gives a safe bound when no
  row-level filter is set) or use ``torch.distributed.algorithms.Join``;
* inside a stream, rows pass through a bounded shuffle buffer seeded by
  ``(seed, epoch, stream)``, bounded both in rows (``shuffle_buffer``) and in payload
  bytes (``shuffle_buffer_bytes``, 64 MiB by default), whichever is reached first.

Memory per DataLoader worker is about ``shuffle_buffer_bytes`` plus one decompressed row
group plus the batches in flight. It matters for speed too: every page a worker touches
for the first time is a page fault (measured 3-6 µs per 4 KiB page on a VM, ~1 ms per
MiB of a worker's peak memory). Workers that are new processes every epoch pay that
every epoch: in ``bench/read.py`` (500 CT slices per worker per epoch) the 512-row buffer
alone (128 MiB) cost more in page faults than decoding the slices (docs/benchmarks.md,
"Reading (training loaders)"). :class:`CatalogDataLoader` therefore keeps its workers
between epochs (``persistent_workers``, on by default with workers), which is correct
only because it sends each pass's *iteration plan* to the running workers.

Persistent workers: a worker keeps the dataset copy it was started with, so
``set_epoch`` / ``end_epoch`` / ``load_state_dict`` done later in the trainer never reach
it. What a pass needs from the trainer is small: the epoch and, per stream, how many
samples to skip. :class:`CatalogDataLoader` keeps these in a shared-memory int64 tensor
``[epoch, streams, skip_0 .. skip_{S-1}]`` (``new_iteration_plan``), writes it right
before each ``iter()`` of its DataLoader, and a worker reads it when its pass starts
(torch restarts the workers' dataset iterators only after that ``iter()``). Forked
workers map the same pages; spawned/forkserver workers receive the storage by handle
(torch's multiprocessing reductions); a plain ``pickle`` copies the values. Any other
change to the dataset (a new transform, say) still does not reach persistent workers.

Resuming: every item carries ``_stream`` (its stream id) and ``_streams`` (how many). The
dataset (or :class:`CatalogDataLoader`, which does it for you) counts, in the training
process, how many samples of each stream were *consumed*; ``state_dict()`` holds these
counts and the epoch. After ``load_state_dict()``, each stream replays its deterministic
order and skips what was consumed (skipped rows are never decoded), so the rest of the
epoch is exactly the samples not yet seen. The same ``world_size`` and ``num_workers``
are required on resume (the split depends on them; a mismatch raises).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from catalogs.reading import (
    DEFAULT_SHUFFLE_BUFFER,
    DEFAULT_SHUFFLE_BUFFER_BYTES,
    FilterLike,
    FooterCache,
    RowGroup,
    as_filter,
    filesystem_for,
    plan_row_groups,
    read_row_group,
)
from curation.images import decode_png

STREAM_KEY = "_stream"
STREAMS_KEY = "_streams"
STATE_FORMAT = 1

Transform = Callable[[dict[str, Any]], Any]


#: rows converted from Arrow to Python objects at a time
PYLIST_ROWS = 16

#: slots of an iteration plan before the per-stream skip counts: epoch, streams
PLAN_HEADER = 2


def new_iteration_plan(streams: int) -> torch.Tensor:
    """A zeroed iteration plan ``[epoch, streams, skip_0 .. skip_{S-1}]`` in shared memory.

    Shared because persistent DataLoader workers keep the dataset copy they started with:
    this tensor is the one part of that copy the trainer can still write (see the module
    docstring). int64, so skip counts and epochs never overflow.
    """
    if streams < 1:
        raise ValueError(f"an iteration plan needs at least one stream, got {streams}")
    return torch.zeros(PLAN_HEADER + streams, dtype=torch.int64).share_memory_()


def worker_stream(rank: int, world_size: int) -> tuple[int, int]:
    """(this process's stream id, number of streams) for the current DataLoader worker."""
    info = get_worker_info()
    num_workers, worker_id = (1, 0) if info is None else (info.num_workers, info.id)
    return rank * num_workers + worker_id, world_size * num_workers


def assign_row_groups(
    groups: Sequence[RowGroup], stream: int, streams: int, seed: int, epoch_key: Sequence[int], shuffle: bool
) -> list[RowGroup]:
    """The row groups one stream reads in one epoch (see the module docstring)."""
    order = np.random.default_rng([seed, *epoch_key]).permutation(len(groups)) if shuffle else np.arange(len(groups))
    return [groups[int(i)] for i in order[stream::streams]]


def payload_bytes(value: Any) -> int:
    """Bytes of the payload of a row as ``to_pylist`` makes it: the lengths of its bytes
    and strings (images, masks, video, text), nested lists and dicts included. Python's
    per-object overhead is not counted (small next to image bytes)."""
    if isinstance(value, bytes | bytearray | str):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list | tuple):
        return 0
    total = 0
    for item in value:  # a loop, not sum(genexpr): this runs once per row in every worker
        if item is not None and not isinstance(item, int | float | bool):
            total += payload_bytes(item)
    return total


def bounded_shuffle(
    rows: Iterable[Any],
    buffer_size: int,
    rng: np.random.Generator,
    *,
    max_bytes: int | None = None,
    size_of: Callable[[Any], int] = payload_bytes,
) -> Iterator[Any]:
    """Shuffle a stream with a buffer of at most ``buffer_size`` items and, if given,
    ``max_bytes`` bytes (``size_of`` each item): memory stays bounded either way.

    Each incoming item first evicts uniformly random buffered items (yielding them) until
    it fits both bounds, then joins the buffer. Bytes held never exceed ``max_bytes``,
    except by a single item larger than the whole bound, which is then held alone.
    """
    if buffer_size <= 1 or (max_bytes is not None and max_bytes <= 0):
        yield from rows
        return
    buffer: list[Any] = []
    sizes: list[int] = []
    held = 0
    for row in rows:
        size = size_of(row) if max_bytes is not None else 0
        while buffer and (len(buffer) >= buffer_size or (max_bytes is not None and held + size > max_bytes)):
            j = int(rng.integers(len(buffer)))
            buffer[j], buffer[-1] = buffer[-1], buffer[j]
            sizes[j], sizes[-1] = sizes[-1], sizes[j]
            held -= sizes.pop()
            yield buffer.pop()
        buffer.append(row)
        sizes.append(size)
        held += size
    for j in rng.permutation(len(buffer)):
        yield buffer[int(j)]


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """A decoded image as a channels-first tensor: (1, H, W) or (C, H, W).

    uint8 stays uint8, bool stays bool, uint16 becomes int32 (lossless; torch's uint16
    has few kernels, so MONAI/torchvision transforms would fail on it).
    """
    arr = array.astype(np.int32) if array.dtype == np.uint16 else array
    if not arr.flags.writeable:
        arr = arr.copy()
    tensor = torch.from_numpy(arr)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def mask_to_tensor(data: bytes) -> torch.Tensor:
    """A 1-bit PNG mask as an (H, W) bool tensor."""
    mask = decode_png(data)
    return torch.from_numpy(np.array(mask, dtype=bool))


def decode_sample(row: dict[str, Any]) -> dict[str, Any]:
    """Images and masks of one row decoded to tensors; everything else passes through.

    Adds ``images`` ({role: tensor}), ``image`` (the ``input`` role, else the first),
    ``image_info`` ({role: geometry/window/value scale}), ``masks`` ((N, H, W) bool),
    ``mask_labels``, ``mask_categories`` and ``mask_info`` (boxes and click prompts).
    Video bytes stay encoded (decode them in a transform if the model needs frames).
    """
    item = dict(row)
    sample_id = row.get("sample_id")
    if "images" in row:
        tensors: dict[str, torch.Tensor] = {}
        info: dict[str, dict[str, Any]] = {}
        for image in row["images"] or []:
            try:
                tensors[image["role"]] = array_to_tensor(decode_png(image["data"]))
            except Exception as exc:  # noqa: BLE001 - re-raised with the sample's context
                raise ValueError(
                    f"sample {sample_id}: image role {image['role']!r} ({image.get('format')}) cannot be decoded: {exc}"
                ) from exc
            info[image["role"]] = {k: v for k, v in image.items() if k != "data"}
        item["images"] = tensors
        item["image_info"] = info
        if tensors:
            item["image"] = tensors.get("input", next(iter(tensors.values())))
    if "masks" in row:
        masks = row["masks"] or []
        decoded = [mask_to_tensor(m["data"]) for m in masks]
        if decoded:
            item["masks"] = torch.stack(decoded)
        else:
            image = item.get("image")
            height, width = (int(image.shape[-2]), int(image.shape[-1])) if image is not None else (0, 0)
            item["masks"] = torch.zeros((0, height, width), dtype=torch.bool)
        item["mask_labels"] = [m["label"] for m in masks]
        item["mask_categories"] = [m["category"] for m in masks]
        item["mask_info"] = [{k: v for k, v in m.items() if k != "data"} for m in masks]
    return item


class StatefulStreams(IterableDataset):  # type: ignore[type-arg]
    """Epochs, consumed-sample bookkeeping and resume, shared by datasets and mixtures."""

    def __init__(self, *, rank: int, world_size: int, seed: int):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0
        self._consumed: dict[int, int] = {}
        self._streams: int | None = None
        #: the loader's shared iteration plan while it starts workers (they keep it)
        self._plan: torch.Tensor | None = None
        #: pid of the DataLoader worker that iterated this copy without a plan
        self._iterated_in_worker: int | None = None

    # -- what a subclass provides ------------------------------------------------------
    def iter_stream(self, stream: int, streams: int, epoch_key: Sequence[int], skip: int) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    # -- iteration -------------------------------------------------------------------
    def check_resumable(self, streams: int) -> None:
        """Raise unless a loaded state can resume with ``streams`` (world_size × workers)."""
        if self._consumed and self._streams is not None and self._streams != streams:
            raise ValueError(
                f"cannot resume: the saved state was made with {self._streams} streams "
                f"(world_size x num_workers), this run has {streams}; use the same world_size and num_workers"
            )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # a generator: the plan is read at the first ``next``, after the trainer wrote it
        stream, streams = worker_stream(self.rank, self.world_size)
        epoch, skip = self.pass_plan(stream, streams)
        for item in self.iter_stream(stream, streams, (epoch,), skip):
            item[STREAM_KEY] = stream
            item[STREAMS_KEY] = streams
            yield item

    def pass_plan(self, stream: int, streams: int) -> tuple[int, int]:
        """(epoch, samples to skip) for ``stream``'s pass starting now.

        In a DataLoader worker started by :class:`CatalogDataLoader`, from the shared
        iteration plan (what the trainer wrote for this pass); otherwise from this copy's
        own ``epoch`` and consumed counts.
        """
        in_worker = get_worker_info() is not None
        if in_worker and self._plan is not None:
            plan = self._plan.tolist()
            if plan[1] != streams:
                raise RuntimeError(
                    f"the iteration plan is for {plan[1]} streams but this worker is stream {stream} "
                    f"of {streams} (world_size x num_workers); the loader and its workers disagree"
                )
            return int(plan[0]), int(plan[PLAN_HEADER + stream])
        if in_worker:
            self._warn_if_worker_reused()
        self.check_resumable(streams)
        return self.epoch, self._consumed.get(stream, 0)

    def _warn_if_worker_reused(self) -> None:
        """Warn when one worker iterates its copy a second time without a plan: a plain
        DataLoader with ``persistent_workers=True``, whose workers never see set_epoch or
        load_state_dict (each pass would repeat the epoch they started with)."""
        pid = os.getpid()
        if self._iterated_in_worker == pid:
            warnings.warn(
                f"{type(self).__name__} is iterated again in the same DataLoader worker (persistent_workers=True "
                f"on a plain DataLoader?): this worker's copy still has epoch {self.epoch} and its old resume "
                "state, and does not see set_epoch/end_epoch/load_state_dict made in the trainer. Use "
                "catalogs.torch_loader.CatalogDataLoader, which sends them to persistent workers.",
                RuntimeWarning,
                stacklevel=3,
            )
        self._iterated_in_worker = pid

    def write_plan(self, plan: torch.Tensor, streams: int) -> None:
        """Write the next pass's epoch and per-stream skip counts into ``plan``, for the
        workers of a loader that splits this dataset into ``streams`` streams."""
        self.check_resumable(streams)
        if plan.dtype != torch.int64 or plan.numel() != PLAN_HEADER + streams:
            raise ValueError(
                f"an iteration plan for {streams} streams is {PLAN_HEADER + streams} int64 values, "
                f"got {plan.numel()} of {plan.dtype}"
            )
        outside = sorted(s for s in self._consumed if not 0 <= s < streams)
        if outside:
            raise ValueError(f"cannot resume: consumed counts for streams {outside}, this run has streams 0..{streams - 1}")
        values = [self.epoch, streams, *(self._consumed.get(s, 0) for s in range(streams))]
        plan.copy_(torch.tensor(values, dtype=torch.int64))

    def attach_plan(self, plan: torch.Tensor | None) -> None:
        """Let workers started from now on read ``plan`` (None: their own attributes)."""
        self._plan = plan

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (new row-group order and shuffle); forgets consumed counts."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch
        self._consumed = {}
        self._streams = None

    # -- resume ----------------------------------------------------------------------
    def observe(self, batch: Any) -> None:
        """Count a delivered item or batch as consumed (``CatalogDataLoader`` calls this)."""
        streams = _as_ints(batch[STREAM_KEY]) if isinstance(batch, Mapping) else [
            int(item[STREAM_KEY]) for item in batch
        ]
        totals = _as_ints(batch[STREAMS_KEY]) if isinstance(batch, Mapping) else [
            int(item[STREAMS_KEY]) for item in batch
        ]
        if totals:
            self._streams = totals[0]
        for stream in streams:
            self._consumed[stream] = self._consumed.get(stream, 0) + 1

    def end_epoch(self) -> None:
        """The epoch was consumed to the end: the next state resumes at the next epoch."""
        self.set_epoch(self.epoch + 1)

    def state_dict(self) -> dict[str, Any]:
        """What was consumed this epoch, per stream (JSON-serialisable)."""
        return {
            "format": STATE_FORMAT,
            "seed": self.seed,
            "epoch": self.epoch,
            "rank": self.rank,
            "world_size": self.world_size,
            "streams": self._streams,
            "consumed": {str(k): v for k, v in sorted(self._consumed.items())},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from ``state_dict()``: the next iteration yields the rest of that epoch."""
        for key, mine in (("seed", self.seed), ("rank", self.rank), ("world_size", self.world_size)):
            if state.get(key) != mine:
                raise ValueError(f"cannot resume: state has {key}={state.get(key)!r}, this dataset has {key}={mine!r}")
        self.epoch = int(state["epoch"])
        self._streams = state.get("streams")
        self._consumed = {int(k): int(v) for k, v in state.get("consumed", {}).items()}


def _as_ints(values: Any) -> list[int]:
    if isinstance(values, torch.Tensor):
        return [int(v) for v in values.reshape(-1).tolist()]
    if isinstance(values, int | np.integer):
        return [int(values)]
    return [int(v) for v in values]


class CatalogIterableDataset(StatefulStreams):
    """Samples of one pinned version, split by row group across ranks × workers.

    Made by ``DatasetCatalog.to_torch``; see the module docstring for the policy.
    ``shuffle_buffer`` bounds a stream's shuffle buffer in rows, ``shuffle_buffer_bytes``
    in payload bytes (``payload_bytes``; None for no byte bound); the first bound reached
    applies (``cat.to_torch`` takes both).
    """

    def __init__(
        self,
        paths: Sequence[str],
        *,
        name: str = "",
        version: str = "",
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,  # noqa: A002 - the public API's word
        shuffle: bool = True,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        shuffle_buffer_bytes: int | None = DEFAULT_SHUFFLE_BUFFER_BYTES,
        decode: bool = True,
        transform: Transform | None = None,
        filesystem: Any = None,
    ):
        super().__init__(rank=rank, world_size=world_size, seed=seed)
        self.name = name
        self.version = version
        self.paths = list(paths)
        self.columns = _with_sample_id(columns)
        self.filter = as_filter(filter)
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer if shuffle else 0
        if shuffle_buffer_bytes is not None and shuffle_buffer_bytes <= 0:
            raise ValueError(f"shuffle_buffer_bytes must be positive or None (no byte bound), got {shuffle_buffer_bytes}")
        #: payload bytes a stream's shuffle buffer holds at most (None: rows bound only)
        self.shuffle_buffer_bytes = shuffle_buffer_bytes
        self.footers = FooterCache()
        self.decode = decode
        self.transform = transform
        self.filesystem, stripped = filesystem_for(self.paths, filesystem)
        self.row_groups = plan_row_groups(stripped, self.filesystem.get(), self.filter)

    def __repr__(self) -> str:
        return (
            f"CatalogIterableDataset({self.name}@{self.version}, {len(self.row_groups)} row groups, "
            f"rank {self.rank}/{self.world_size}, seed {self.seed}, epoch {self.epoch})"
        )

    @property
    def planned_rows(self) -> int:
        """Rows in the planned row groups (exact without a filter; an upper bound with one)."""
        return sum(g.num_rows for g in self.row_groups)

    def min_rows_per_rank(self, num_workers: int = 0) -> int:
        """The fewest rows any rank gets this epoch (exact when no filter is set).

        Stop every rank after ``min_rows_per_rank() // batch_size`` steps to keep DDP
        collectives in lock-step without padding.
        """
        streams = self.world_size * max(1, num_workers)
        per_rank = [0] * self.world_size
        for stream in range(streams):
            groups = assign_row_groups(self.row_groups, stream, streams, self.seed, (self.epoch,), self.shuffle)
            per_rank[stream // max(1, num_workers)] += sum(g.num_rows for g in groups)
        return min(per_rank)

    def read_rows(self, groups: Sequence[RowGroup]) -> Iterator[dict[str, Any]]:
        """Undecoded rows of row groups, in order."""
        for group in groups:
            table: pa.Table = read_row_group(
                group,
                self.filesystem.get(),
                self.columns,
                self.filter,
                use_threads=get_worker_info() is None,
                footers=self.footers,
            )
            # to Python in small slices: the whole group at once allocates every image's bytes
            # up front (tens of MiB of fresh pages per group in each worker)
            for batch in table.to_batches(max_chunksize=PYLIST_ROWS):
                yield from batch.to_pylist()

    def row_stream(self, stream: int, streams: int, epoch_key: Sequence[int]) -> Iterator[dict[str, Any]]:
        """One stream's undecoded rows for an epoch, in its deterministic shuffled order."""
        groups = assign_row_groups(self.row_groups, stream, streams, self.seed, epoch_key, self.shuffle)
        rng = np.random.default_rng([self.seed, *epoch_key, stream, 1])
        return bounded_shuffle(self.read_rows(groups), self.shuffle_buffer, rng, max_bytes=self.shuffle_buffer_bytes)

    def make_item(self, row: dict[str, Any]) -> dict[str, Any]:
        """Decode (if asked) and transform one row into a training item."""
        item = decode_sample(row) if self.decode else dict(row)
        if self.transform is not None:
            transformed = self.transform(item)
            if not isinstance(transformed, Mapping):
                raise TypeError(
                    f"the transform must return a dict (got {type(transformed).__name__}) for sample {row.get('sample_id')}"
                )
            item = dict(transformed)
        return item

    def iter_stream(self, stream: int, streams: int, epoch_key: Sequence[int], skip: int) -> Iterator[dict[str, Any]]:
        for position, row in enumerate(self.row_stream(stream, streams, epoch_key)):
            if position >= skip:
                yield self.make_item(row)


def _with_sample_id(columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    return ["sample_id", *[c for c in columns if c != "sample_id"]]


def collate_samples(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch dict items: tensors of one shape are stacked, everything else becomes a list.

    torch's ``default_collate`` fails on None (a null caption) and on images of different
    sizes; medical batches have both. ``images`` ({role: tensor}) is batched per role, and
    ``image`` reuses the stacked tensor of the role it is (no second copy): from DataLoader
    workers every tensor crosses to the trainer as its own shared-memory segment, so one
    stacked tensor per role instead of one per sample matters.
    """
    keys = list(dict.fromkeys(k for item in items for k in item))
    keys.sort(key=lambda k: k != "images")  # roles first, so ``image`` can reuse them
    batch: dict[str, Any] = {}
    for key in keys:
        values = [item.get(key) for item in items]
        if key == "images" and all(isinstance(v, Mapping) for v in values):
            batch[key] = _collate_roles([v for v in values if isinstance(v, Mapping)])
        elif key == "image" and isinstance(batch.get("images"), Mapping):
            primary = _primary_image(items, batch["images"])
            batch[key] = primary if primary is not None else _stack_or_list(values)
        else:
            batch[key] = _stack_or_list(values)
    return batch


def _stack_or_list(values: Sequence[Any]) -> Any:
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if tensors and len(tensors) == len(values) and len({tuple(t.shape) for t in tensors}) == 1:
        return _stack(tensors)
    return list(values)


def _stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``; in a DataLoader worker, straight into shared memory (as torch's
    ``default_collate`` does), so the batch is not copied again to cross to the trainer."""
    first = tensors[0]
    if get_worker_info() is None or first.device.type != "cpu":
        return torch.stack(list(tensors))
    numel = sum(t.numel() for t in tensors)
    storage = first._typed_storage()._new_shared(numel, device=first.device)
    out = first.new(storage).resize_(len(tensors), *first.shape)
    return torch.stack(list(tensors), out=out)


def _collate_roles(values: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    roles = list(dict.fromkeys(r for v in values for r in v))
    return {role: _stack_or_list([v.get(role) for v in values]) for role in roles}


def _primary_image(items: Sequence[Mapping[str, Any]], images: Mapping[str, Any]) -> Any:
    """The batched ``images[role]`` when every item's ``image`` is that role's tensor."""
    for role, stacked in images.items():
        if isinstance(stacked, torch.Tensor) and all(
            item.get("image") is (item.get("images") or {}).get(role) for item in items
        ):
            return stacked
    return None


class CatalogDataLoader:
    """A torch ``DataLoader`` that records what it delivered, so training can resume.

    ``state_dict()`` / ``load_state_dict()`` go to the dataset; a completed pass moves the
    dataset to its next epoch. Each pass's epoch and resume skips reach the workers
    through a shared iteration plan, so workers may outlive a pass.

    ``persistent_workers`` (None: on when ``num_workers > 0``) keeps the same worker
    processes for every pass. On by default because a new worker pays its start and the
    first touch of every page of its shuffle buffer and row group again each epoch
    (docs/benchmarks.md), and epochs and resume are correct either way. The price: each
    worker's memory (about ``shuffle_buffer_bytes`` + a row group) stays resident between
    epochs, also while another loader (validation) runs, and changes to the dataset other
    than its epoch and resume state (a new ``transform``) do not reach running workers:
    pass ``persistent_workers=False``, or make a new loader, for either.
    """

    def __init__(
        self,
        dataset: StatefulStreams,
        *,
        batch_size: int | None = 1,
        num_workers: int = 0,
        collate_fn: Callable[[Sequence[Any]], Any] | None = collate_samples,
        persistent_workers: bool | None = None,
        **loader_kwargs: Any,
    ):
        self.dataset = dataset
        if batch_size is None and collate_fn is collate_samples:
            collate_fn = None  # unbatched: items pass through as they are
        if persistent_workers is None:
            persistent_workers = num_workers > 0
        #: world_size x workers: the streams this loader splits the dataset into
        self.streams = dataset.world_size * max(1, num_workers)
        #: what workers read at the start of each pass (None without workers)
        self.plan = new_iteration_plan(self.streams) if num_workers > 0 else None
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate_fn,
            persistent_workers=persistent_workers,
            **loader_kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"CatalogDataLoader({self.dataset!r}, num_workers={self.loader.num_workers}, "
            f"persistent_workers={self.loader.persistent_workers})"
        )

    def __iter__(self) -> Iterator[Any]:
        for batch in self._start_pass():
            self.dataset.observe(batch)
            yield batch
        self.dataset.end_epoch()

    def _start_pass(self) -> Iterator[Any]:
        """Write this pass's plan, then start the DataLoader's iterator (new workers, or a
        reset of persistent ones, whose dataset iterators restart after this).

        The plan is attached to the dataset only while the iterator starts, when new
        workers copy the dataset: a later pickle or plain DataLoader of the dataset then
        follows the dataset's own epoch, not a plan this loader no longer writes.
        """
        # checked here, not only in the workers: an error raised in a worker takes seconds to shut down
        if self.plan is None:
            self.dataset.check_resumable(self.streams)
            return iter(self.loader)
        self.dataset.write_plan(self.plan, self.streams)
        self.dataset.attach_plan(self.plan)
        try:
            return iter(self.loader)
        finally:
            self.dataset.attach_plan(None)

    def state_dict(self) -> dict[str, Any]:
        return self.dataset.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.dataset.load_state_dict(state)

