"""The torch loader over a real published version: split, shuffle, resume, decode, pushdown."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import pickle
from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
from catalog_rows import ids
from fsspec.implementations.local import LocalFileSystem

from catalogs.reading import FooterCache, read_row_group
from catalogs.torch_loader import CatalogDataLoader, bounded_shuffle, collate_samples, payload_bytes
from curation.images import decode_png


def test_exactly_once_over_two_ranks_and_two_workers(mixed: Any) -> None:
    cat, rows = mixed
    per_rank: list[list[str]] = []
    for rank in range(2):
        dataset = cat.to_torch("mixed", "v1", rank=rank, world_size=2, seed=7, decode=False, shuffle_buffer=8)
        loader = CatalogDataLoader(dataset, batch_size=5, num_workers=2)
        seen = [sid for batch in loader for sid in batch["sample_id"]]
        per_rank.append(seen)
    everything = per_rank[0] + per_rank[1]
    assert Counter(everything) == Counter(ids(rows))  # each sample exactly once
    assert set(per_rank[0]).isdisjoint(per_rank[1])
    # 12 row groups of 6 over 4 streams: every rank gets 6 whole row groups
    assert len(per_rank[0]) == len(per_rank[1]) == 36


def test_epochs_reshuffle_deterministically(mixed: Any) -> None:
    cat, rows = mixed

    def order(seed: int, epoch: int) -> list[str]:
        dataset = cat.to_torch("mixed", "v1", seed=seed, decode=False, shuffle_buffer=16)
        dataset.set_epoch(epoch)
        return [item["sample_id"] for item in dataset]

    first = order(3, 0)
    assert first == order(3, 0)  # same seed and epoch: same order, every run
    assert sorted(first) == sorted(ids(rows))
    assert order(3, 1) != first and sorted(order(3, 1)) == sorted(first)
    assert order(4, 0) != first
    unshuffled = [item["sample_id"] for item in cat.to_torch("mixed", "v1", decode=False, shuffle=False)]
    assert unshuffled == ids(rows)  # shards are sorted and rows were written in order


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_yields_exactly_the_rest(mixed: Any, num_workers: int) -> None:
    cat, rows = mixed
    dataset = cat.to_torch("mixed", "v1", seed=11, decode=False, shuffle_buffer=10)
    dataset.set_epoch(2)
    loader = CatalogDataLoader(dataset, batch_size=4, num_workers=num_workers)
    consumed: list[str] = []
    for step, batch in enumerate(loader):
        consumed += batch["sample_id"]
        if step == 4:
            break
    state = json.loads(json.dumps(loader.state_dict()))  # a checkpoint survives JSON
    assert state["epoch"] == 2 and sum(state["consumed"].values()) == len(consumed) == 20

    fresh = cat.to_torch("mixed", "v1", seed=11, decode=False, shuffle_buffer=10)
    resumed = CatalogDataLoader(fresh, batch_size=4, num_workers=num_workers)
    resumed.load_state_dict(state)
    rest = [sid for batch in resumed for sid in batch["sample_id"]]
    assert Counter(consumed + rest) == Counter(ids(rows))
    assert fresh.epoch == 3 and fresh.state_dict()["consumed"] == {}  # finished: next epoch


def test_resume_with_other_worker_count_is_refused(mixed: Any) -> None:
    cat, _ = mixed
    dataset = cat.to_torch("mixed", "v1", decode=False)
    loader = CatalogDataLoader(dataset, batch_size=4, num_workers=0)
    next(iter(loader))
    state = loader.state_dict()
    fresh = cat.to_torch("mixed", "v1", decode=False)
    fresh.load_state_dict(state)
    with pytest.raises(ValueError, match="1 streams"):
        list(CatalogDataLoader(fresh, batch_size=4, num_workers=2))
    other_seed = cat.to_torch("mixed", "v1", seed=5, decode=False)
    with pytest.raises(ValueError, match="seed"):
        other_seed.load_state_dict(state)


def test_decoded_items_match_the_stored_pixels(mixed: Any) -> None:
    cat, rows = mixed
    by_id = {r["sample_id"]: r for r in rows}
    item = next(iter(cat.to_torch("mixed", "v1", shuffle=False)))
    source = by_id[item["sample_id"]]
    expected = decode_png(source["images"][0]["data"])
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (1, 128, 128)
    assert np.array_equal(item["image"][0].numpy(), expected)
    raw = item["images"]["raw"]
    assert raw.dtype == torch.int32  # uint16 widened losslessly
    assert np.array_equal(raw[0].numpy(), decode_png(source["images"][1]["data"]).astype(np.int32))
    assert item["image_info"]["raw"]["value_offset"] == -1024.0
    assert item["masks"].dtype == torch.bool and item["masks"].shape == (1, 128, 128)
    assert int(item["masks"].sum()) == source["masks"][0]["area_px"] > 0
    assert item["mask_labels"] == ["1"] and item["mask_categories"] == ["body"]
    assert item["modality"] == "CT" and item["split"] == "train"


def test_monai_dict_transform_runs_on_decoded_items(mixed: Any) -> None:
    from monai.transforms import Compose, EnsureTyped, ScaleIntensityd

    cat, _ = mixed
    transform = Compose([EnsureTyped(keys="image", dtype=torch.float32), ScaleIntensityd(keys="image")])
    dataset = cat.to_torch("mixed", "v1", transform=transform, columns=["images", "modality"])
    batch = next(iter(CatalogDataLoader(dataset, batch_size=4, num_workers=0)))
    images = batch["image"]
    assert tuple(images.shape) == (4, 1, 128, 128)
    assert images.dtype == torch.float32
    for image in images:
        assert float(image.min()) == pytest.approx(0.0) and float(image.max()) == pytest.approx(1.0)
    assert len(batch["sample_id"]) == 4  # sample_id is always read


def test_filter_pushdown_prunes_row_groups_and_reads_fewer_bytes(mixed: Any) -> None:
    cat, rows = mixed
    everything = CountingFileSystem()
    all_items = list(cat.to_torch("mixed", "v1", decode=False, filesystem=everything))
    only_mr = CountingFileSystem()
    mr_dataset = cat.to_torch(
        "mixed", "v1", decode=False, filesystem=only_mr, filter={"modality": "MR", "split": "train"}
    )
    mr_items = list(mr_dataset)
    expected = [r["sample_id"] for r in rows if r["modality"] == "MR" and r["split"] == "train"]
    assert sorted(i["sample_id"] for i in mr_items) == sorted(expected) and len(expected) == 12
    assert len(all_items) == 72
    assert len(mr_dataset.row_groups) == 2  # 2 of 12 row groups survive the statistics
    # footers are read for planning either way; the data pages of 10 groups are not
    assert only_mr.bytes_read < 0.4 * everything.bytes_read, (only_mr.bytes_read, everything.bytes_read)


def test_collate_keeps_nulls_and_ragged_values_as_lists() -> None:
    items: list[dict[str, Any]] = [
        {"sample_id": "a", "caption": None, "image": torch.zeros(1, 4, 4), "masks": torch.zeros(0, 4, 4)},
        {"sample_id": "b", "caption": "x", "image": torch.ones(1, 4, 4), "masks": torch.zeros(2, 4, 4)},
    ]
    batch = collate_samples(items)
    assert batch["caption"] == [None, "x"]
    # images per role, and the primary image is the same stacked tensor, not a copy
    a, b = torch.zeros(1, 4, 4), torch.ones(1, 4, 4)
    paired = collate_samples([{"image": a, "images": {"input": a}}, {"image": b, "images": {"input": b}}])
    assert paired["image"] is paired["images"]["input"] and paired["image"].shape == (2, 1, 4, 4)
    assert batch["image"].shape == (2, 1, 4, 4)
    assert isinstance(batch["masks"], list) and batch["masks"][1].shape == (2, 4, 4)


class HeldBytes:
    """Wraps a row source and records, at every pull, the payload bytes pulled but not yet
    yielded: what a shuffle buffer holds at that moment."""

    def __init__(self, rows: Any):
        self.rows = rows
        self.pulled = 0
        self.yielded = 0
        self.max_held = 0
        self.max_held_rows = 0
        self.pulled_rows = 0
        self.yielded_rows = 0

    def __iter__(self) -> Any:
        for row in self.rows:
            self.max_held = max(self.max_held, self.pulled - self.yielded)
            self.max_held_rows = max(self.max_held_rows, self.pulled_rows - self.yielded_rows)
            self.pulled += payload_bytes(row)
            self.pulled_rows += 1
            yield row

    def taken(self, row: Any) -> None:
        self.yielded += payload_bytes(row)
        self.yielded_rows += 1


def test_byte_bounded_shuffle_holds_at_most_the_bound_and_loses_nothing() -> None:
    sizes = np.random.default_rng(0).integers(1_000, 50_000, size=400)
    rows: list[dict[str, Any]] = [{"sample_id": f"s{i}", "images": [{"data": b"x" * int(n)}]} for i, n in enumerate(sizes)]
    source = HeldBytes(rows)
    out: list[str] = []
    for row in bounded_shuffle(source, 10_000, np.random.default_rng(1), max_bytes=200_000):
        source.taken(row)
        out.append(row["sample_id"])
    assert sorted(out) == sorted(r["sample_id"] for r in rows) and len(out) == len(rows)
    assert out != [r["sample_id"] for r in rows]  # shuffled
    # the byte bound held, and it was the binding one (the row bound is 10,000)
    assert 200_000 - int(sizes.max()) < source.max_held <= 200_000
    assert source.max_held_rows < 200_000 // int(sizes.min())

    # the row bound still applies when rows are small
    small = HeldBytes([{"data": b"y" * 10, "i": i} for i in range(300)])
    for row in bounded_shuffle(small, 16, np.random.default_rng(2), max_bytes=10**9):
        small.taken(row)
    assert small.max_held_rows == 16 and small.yielded_rows == 300

    # a row larger than the whole bound is held alone, never dropped
    big = HeldBytes([{"data": b"z" * n} for n in (10, 500, 10, 10)])
    got = []
    for row in bounded_shuffle(big, 100, np.random.default_rng(3), max_bytes=100):
        big.taken(row)
        got.append(len(row["data"]))
    assert sorted(got) == [10, 10, 10, 500] and big.max_held <= 500


def test_byte_bound_on_a_real_version_keeps_exactly_once_and_resume(mixed: Any) -> None:
    cat, rows = mixed
    row_bytes = [payload_bytes(r) for r in _stored_rows(cat)]
    bound = 4 * max(row_bytes)  # ~4 rows of the ~50 KB each (two images and a mask)

    # memory: what the buffer holds never exceeds the bound
    dataset = cat.to_torch("mixed", "v1", seed=5, decode=False, shuffle_buffer_bytes=bound)
    assert dataset.shuffle_buffer_bytes == bound
    counted: dict[str, HeldBytes] = {}
    plain_read_rows = dataset.read_rows

    def counting_read_rows(groups: Any) -> Any:
        counted["source"] = HeldBytes(plain_read_rows(groups))
        return iter(counted["source"])

    dataset.read_rows = counting_read_rows  # type: ignore[method-assign]
    order = []
    for item in dataset:
        counted["source"].taken({k: v for k, v in item.items() if not k.startswith("_")})
        order.append(item["sample_id"])
    assert sorted(order) == sorted(ids(rows))
    assert bound - max(row_bytes) < counted["source"].max_held <= bound
    unbounded = cat.to_torch("mixed", "v1", seed=5, decode=False, shuffle_buffer=512, shuffle_buffer_bytes=None)
    assert order != [item["sample_id"] for item in unbounded]  # the bound changed the buffer

    # exactly once over 2 ranks x 2 workers, and a mid-epoch resume yields the rest
    per_rank = []
    for rank in range(2):
        ranked = cat.to_torch("mixed", "v1", rank=rank, world_size=2, seed=7, decode=False, shuffle_buffer_bytes=bound)
        per_rank.append([sid for batch in CatalogDataLoader(ranked, batch_size=5, num_workers=2) for sid in batch["sample_id"]])
    assert Counter(per_rank[0] + per_rank[1]) == Counter(ids(rows))
    first = cat.to_torch("mixed", "v1", seed=11, decode=False, shuffle_buffer_bytes=bound)
    loader = CatalogDataLoader(first, batch_size=4, num_workers=2)
    consumed: list[str] = []
    for step, batch in enumerate(loader):
        consumed += batch["sample_id"]
        if step == 6:
            break
    fresh = cat.to_torch("mixed", "v1", seed=11, decode=False, shuffle_buffer_bytes=bound)
    resumed = CatalogDataLoader(fresh, batch_size=4, num_workers=2)
    resumed.load_state_dict(loader.state_dict())
    rest = [sid for batch in resumed for sid in batch["sample_id"]]
    assert Counter(consumed + rest) == Counter(ids(rows)) and len(consumed) == 28


def _stored_rows(cat: Any) -> list[dict[str, Any]]:
    return cat.to_arrow("mixed", "v1").to_pylist()


def test_shuffle_buffer_bytes_must_be_positive(mixed: Any) -> None:
    from catalogs.torch_loader import CatalogIterableDataset

    cat, _ = mixed
    with pytest.raises(ValueError, match="shuffle_buffer_bytes"):
        CatalogIterableDataset(cat.files("mixed", "v1"), shuffle_buffer_bytes=0)


def test_footer_cache_parses_each_file_once_and_reads_the_same_rows(mixed: Any) -> None:
    cat, _ = mixed
    groups = cat.to_torch("mixed", "v1", decode=False).row_groups
    files = {g.path for g in groups}
    assert len(groups) == 12 and len(files) == 3

    def read_all(footers: FooterCache | None) -> tuple[list[str], int]:
        counting = CountingFileSystem()
        handle = cat.to_torch("mixed", "v1", decode=False, filesystem=counting).filesystem.get()
        ids_read = [
            sid
            for g in groups
            for sid in read_row_group(g, handle, ["sample_id", "images"], None, footers=footers)["sample_id"].to_pylist()
        ]
        return ids_read, counting.bytes_read

    cache = FooterCache(max_files=2)
    cached_ids, cached_bytes = read_all(cache)
    plain_ids, plain_bytes = read_all(None)
    assert cached_ids == plain_ids and len(cached_ids) == 72
    # 12 footer reads become 3 (one per file): fewer bytes read for the same rows
    assert cached_bytes < plain_bytes, (cached_bytes, plain_bytes)
    assert len(cache) == 2  # bounded: least recently used file dropped
    clone = pickle.loads(pickle.dumps(cache))
    assert len(clone) == 0 and clone.max_files == 2  # parsed footers stay in their process


def test_rank_outside_world_is_an_error(mixed: Any) -> None:
    cat, _ = mixed
    with pytest.raises(ValueError, match="rank 2"):
        cat.to_torch("mixed", "v1", rank=2, world_size=2)


class CountingFileSystem(LocalFileSystem):
    """A local filesystem that counts the bytes read through it (pushdown evidence)."""

    cachable = False

    def __init__(self) -> None:
        super().__init__()
        self.bytes_read = 0

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        return _CountingFile(super()._open(path, mode, **kwargs), self)


class _CountingFile:
    def __init__(self, handle: Any, owner: CountingFileSystem):
        self._handle = handle
        self._owner = owner

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._owner.bytes_read += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        n = self._handle.readinto(buffer)
        self._owner.bytes_read += n or 0
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


# -- persistent DataLoader workers -------------------------------------------------------


def _report_start(queue: Any, worker_id: int) -> None:
    queue.put(os.getpid())


def _start_recorder(start_method: str | None = None) -> tuple[Any, Any]:
    """(queue, worker_init_fn): torch runs ``worker_init_fn`` each time it starts a worker
    process, which reports its pid — how often workers started, through public API."""
    queue = multiprocessing.get_context(start_method).SimpleQueue()
    return queue, functools.partial(_report_start, queue)


def _starts(queue: Any) -> list[int]:
    pids = []
    while not queue.empty():
        pids.append(int(queue.get()))
    return pids


def _epoch_orders(cat: Any, *, persistent: bool, **loader_kwargs: Any) -> tuple[list[list[str]], list[int]]:
    """Sample orders of 3 passes of one loader (epochs 0, 1 by ``end_epoch``, then 5 by
    ``set_epoch``), and the pid of every worker start during them."""
    dataset = cat.to_torch("mixed", "v1", seed=13, decode=False, shuffle_buffer=8)
    started, record = _start_recorder(loader_kwargs.get("multiprocessing_context"))
    loader = CatalogDataLoader(
        dataset, batch_size=4, num_workers=2, persistent_workers=persistent, worker_init_fn=record, **loader_kwargs
    )
    orders: list[list[str]] = []
    for epoch in (0, 1, 5):
        if epoch == 5:
            dataset.set_epoch(5)
        assert dataset.epoch == epoch
        orders.append([sid for batch in loader for sid in batch["sample_id"]])
    return orders, _starts(started)


def test_persistent_workers_see_every_epoch(mixed: Any) -> None:
    cat, rows = mixed
    orders, starts = _epoch_orders(cat, persistent=True)
    for order in orders:
        assert Counter(order) == Counter(ids(rows)) and len(order) == 72  # exactly once per epoch
    assert len({tuple(order) for order in orders}) == 3  # a new order every epoch
    assert len(starts) == len(set(starts)) == 2  # two workers, each started once for the three passes
    fresh_workers, fresh_starts = _epoch_orders(cat, persistent=False)
    assert len(fresh_starts) == 6  # (the recorder sees non-persistent workers restart every pass)
    assert orders == fresh_workers  # the same orders as workers started anew every epoch


def test_persistent_is_the_default_with_workers(mixed: Any) -> None:
    cat, _ = mixed
    dataset = cat.to_torch("mixed", "v1", decode=False)
    assert CatalogDataLoader(dataset, num_workers=2).loader.persistent_workers is True
    assert CatalogDataLoader(dataset, num_workers=0).loader.persistent_workers is False
    assert CatalogDataLoader(dataset, num_workers=2, persistent_workers=False).loader.persistent_workers is False


def test_persistent_workers_resume_mid_epoch(mixed: Any) -> None:
    cat, rows = mixed
    dataset = cat.to_torch("mixed", "v1", seed=11, decode=False, shuffle_buffer=10)
    dataset.set_epoch(2)
    loader = CatalogDataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True)
    consumed: list[str] = []
    for step, batch in enumerate(loader):
        consumed += batch["sample_id"]
        if step == 4:
            break
    state = json.loads(json.dumps(loader.state_dict()))
    assert state["epoch"] == 2 and sum(state["consumed"].values()) == len(consumed) == 20

    # the same loader, iterated again after the break: its running workers skip what was delivered
    rest_here = [sid for batch in loader for sid in batch["sample_id"]]
    assert Counter(consumed + rest_here) == Counter(ids(rows)) and len(rest_here) == 52
    assert dataset.epoch == 3

    # another loader whose workers already ran a whole epoch loads the checkpoint
    other = cat.to_torch("mixed", "v1", seed=11, decode=False, shuffle_buffer=10)
    started, record = _start_recorder()
    running = CatalogDataLoader(other, batch_size=4, num_workers=2, persistent_workers=True, worker_init_fn=record)
    assert len([sid for batch in running for sid in batch["sample_id"]]) == 72  # epoch 0 starts the workers
    running.load_state_dict(state)
    rest = [sid for batch in running for sid in batch["sample_id"]]
    assert Counter(consumed + rest) == Counter(ids(rows)) and len(rest) == 52
    assert sorted(rest) == sorted(rest_here)
    assert other.epoch == 3 and len(_starts(started)) == 2  # the resumed pass ran on the same two workers
    # and the next epoch is whole, in the order fresh workers give epoch 3
    next_epoch = [sid for batch in running for sid in batch["sample_id"]]
    reference = cat.to_torch("mixed", "v1", seed=11, decode=False, shuffle_buffer=10)
    reference.set_epoch(3)
    fresh = CatalogDataLoader(reference, batch_size=4, num_workers=2, persistent_workers=False)
    assert next_epoch == [sid for batch in fresh for sid in batch["sample_id"]]


def _ct_mr_mixture(cat: Any) -> Any:
    from catalogs.mixtures import MixtureComponent

    return cat.mixture(
        [MixtureComponent("mixed", "v1", 3.0, filter={"modality": "CT"}, label="ct"),
         MixtureComponent("mixed", "v1", 1.0, filter={"modality": "MR"}, label="mr")],
        num_samples=40, seed=3, decode=False, shuffle_buffer=4,
    )


def test_persistent_workers_with_a_mixture_follow_epochs_and_resume(mixed: Any) -> None:
    from catalogs.mixtures import MIXTURE_KEY

    cat, _ = mixed

    def passes(persistent: bool) -> list[list[tuple[str, str]]]:
        loader = CatalogDataLoader(_ct_mr_mixture(cat), batch_size=5, num_workers=2, persistent_workers=persistent)
        return [[(c, s) for b in loader for c, s in zip(b[MIXTURE_KEY], b["sample_id"], strict=True)] for _ in range(3)]

    persistent = passes(True)
    assert all(len(p) == 40 for p in persistent) and len({tuple(p) for p in persistent}) == 3
    assert persistent == passes(False)

    mix = _ct_mr_mixture(cat)
    loader = CatalogDataLoader(mix, batch_size=5, num_workers=2, persistent_workers=True)
    full_epoch_0 = [(c, s) for b in loader for c, s in zip(b[MIXTURE_KEY], b["sample_id"], strict=True)]
    assert full_epoch_0 == persistent[0]
    state = {**mix.state_dict(), "epoch": 1, "streams": 2, "consumed": {"0": 5, "1": 10}}
    loader.load_state_dict(state)
    rest = [(c, s) for b in loader for c, s in zip(b[MIXTURE_KEY], b["sample_id"], strict=True)]
    # epoch 1 without the first 5 items of stream 0 and the first 10 of stream 1
    reference = _ct_mr_mixture(cat)
    reference.set_epoch(1)
    by_stream: dict[int, list[tuple[str, str]]] = {0: [], 1: []}
    for b in CatalogDataLoader(reference, batch_size=5, num_workers=2, persistent_workers=False):
        for c, s, stream in zip(b[MIXTURE_KEY], b["sample_id"], b["_stream"], strict=True):
            by_stream[stream].append((c, s))
    assert Counter(rest) == Counter(by_stream[0][5:] + by_stream[1][10:]) and len(rest) == 25


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_persistent_spawned_workers_get_the_plan_by_handle(mixed: Any, start_method: str) -> None:
    cat, _ = mixed
    spawned, starts = _epoch_orders(cat, persistent=True, multiprocessing_context=start_method)
    forked, _ = _epoch_orders(cat, persistent=False)
    assert spawned == forked and len(starts) == 2


def test_a_dataset_after_a_loader_carries_no_stale_plan(mixed: Any) -> None:
    from torch.utils.data import DataLoader

    cat, rows = mixed
    dataset = cat.to_torch("mixed", "v1", seed=2, decode=False, shuffle_buffer=8)
    loader = CatalogDataLoader(dataset, batch_size=4, num_workers=2)
    first = [sid for batch in loader for sid in batch["sample_id"]]
    dataset.set_epoch(4)
    # a plain DataLoader (new workers) and a pickled copy follow the dataset's own epoch
    plain = [sid for batch in DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_samples) for sid in batch["sample_id"]]
    copied = pickle.loads(pickle.dumps(dataset))
    in_process = [item["sample_id"] for item in copied]
    assert Counter(plain) == Counter(ids(rows)) and plain != first
    assert plain == [sid for batch in loader for sid in batch["sample_id"]]  # epoch 4 through the loader
    assert sorted(in_process) == sorted(ids(rows)) and copied.epoch == 4


def _runtime_warnings_raise(worker_id: int) -> None:
    import warnings

    warnings.simplefilter("error", RuntimeWarning)


def test_a_plain_persistent_dataloader_warns_that_epochs_do_not_reach_it(mixed: Any) -> None:
    from torch.utils.data import DataLoader

    cat, _ = mixed
    dataset = cat.to_torch("mixed", "v1", decode=False)
    plain = DataLoader(
        dataset, batch_size=8, num_workers=1, persistent_workers=True, collate_fn=collate_samples,
        worker_init_fn=_runtime_warnings_raise,  # the worker's warning comes back as an error
    )
    assert len([sid for batch in plain for sid in batch["sample_id"]]) == 72  # first pass: nothing to warn about
    with pytest.raises(RuntimeWarning, match="set_epoch"):
        next(iter(plain))
