"""Decoded samples per second: catalog shards vs PNG files vs WebDataset tars (one run).

The same N 512×512 8-bit CT slices (the real CT in tests/data, windowed W400/L40, each
with seeded Gaussian HU noise and a random shift so no two PNGs are equal) are stored
four ways, all in this run's temporary folder, each reader's files read once right before
each of its passes (untimed) so that all sit in the page cache, and the bytes a pass still
reads from disk are reported:

* ``catalog``: our zstd Parquet shards (one variant per ``--row-group-mib``; 16 is the
  ShardWriter default) holding the images as medcurate stores them (``encode_png``:
  unfiltered PNG, compressed by the shard's zstd pages), published and read through
  ``cat.to_torch`` with its defaults (row-group split, shuffle buffer of 512 rows / 64 MiB)
  and ``CatalogDataLoader`` (each pass is the next epoch: a new order, as in training);
* ``png-files``: one PNG file per sample as datasets ship them (deflate-compressed,
  Pillow's default level 6), a map-style dataset with a shuffling sampler: the baseline;
* ``webdataset``: the same compressed PNGs in tar shards of 200 samples,
  ``webdataset.WebDataset`` (shard shuffle, buffer 512);
* ``png-files-stored``: one file per sample holding medcurate's stored PNG bytes (what the
  shards hold, uncompressed on disk): separates the gain of the encoding from the gain of
  the container.

Every reader yields ``{"sample_id", "image"}`` with the image decoded by the same
``curation.images.decode_png`` to a (1, 512, 512) uint8 tensor, batched by the same
collate function, with 0, 2 and 4 DataLoader workers; each configuration runs three
times (``--repeats``), interleaved with the others and the order rotated each round, and
its fastest pass counts. Because the machine is shared, each pass also reports CPU-ms per
sample, which other processes' load inflates less; the least counts. CPU is the main
process's plus its workers': reaped workers from getrusage, live (persistent) workers from
their ``/proc/<pid>/stat`` via psutil, read before and after the pass (10 ms ticks per
worker and read). The ratio is against PNG files at the same worker count; the per-round
ratios (catalog and PNG files measured in the same round) show the spread. The load
average is printed at the start and after each worker count.

``--persistent``: every reader keeps one DataLoader with ``persistent_workers=True`` for
all its passes (as a training job does over its epochs), so workers start once. The first
pass of each reader starts its workers: it runs in an extra first round, interleaved like
the others, and is reported apart; the ``--repeats`` rounds after it count. At 0 workers
there is nothing to keep (the same as without the option).

Usage: ``python bench/read.py [--samples 2000] [--repeats 3] [--persistent]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import tarfile
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pydicom
import torch
from torch.utils.data import DataLoader, Dataset

from catalogs import open_catalog
from catalogs.torch_loader import CatalogDataLoader, array_to_tensor, collate_samples
from curation.images import decode_png, encode_png, image_record, to_uint8_window
from curation.schema import samples_to_table
from curation.shards import ShardWriter

CT_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "ct_3slice_seg"
BATCH = 32


def ct_slices() -> list[np.ndarray]:
    out = []
    for path in sorted(CT_DIR.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        out.append(ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    return out


#: PNG files as datasets ship them: Pillow's (and libpng's) default deflate level
SHIPPED_PNG_LEVEL = 6


def make_pngs(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """n distinct realistic 512×512 CT PNGs (noise σ=4 HU, shift up to ±8 px), compressed."""
    rng = np.random.default_rng(seed)
    slices = ct_slices()
    pngs = []
    for i in range(n):
        hu = np.roll(slices[i % 3], tuple(rng.integers(-8, 9, size=2)), axis=(0, 1))
        hu = hu + rng.normal(0.0, 4.0, size=hu.shape).astype(np.float32)
        pngs.append((f"ct{i:06d}", encode_png(to_uint8_window(hu, -160.0, 240.0), compress_level=SHIPPED_PNG_LEVEL)))
    return pngs


def as_stored(pngs: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The same images re-encoded as medcurate stores them (what ``convert`` writes)."""
    return [(key, encode_png(decode_png(png))) for key, png in pngs]


def provenance() -> dict[str, Any]:
    import datetime as dt

    return {"pipeline_version": "bench", "steps_json": "[]", "run_id": "bench", "created_at": dt.datetime.now(dt.UTC)}


def write_catalog(workdir: str, pngs: list[tuple[str, bytes]], row_group_mib: int) -> Any:
    cat = open_catalog(workdir=workdir)
    prov = provenance()
    with ShardWriter(cat.data_dir("bench"), "bench", row_group_bytes=row_group_mib * 2**20) as writer:
        for start in range(0, len(pngs), 200):
            rows = []
            for key, png in pngs[start : start + 200]:
                record = image_record("input", np.zeros((512, 512), np.uint8), png=png)  # png: already stored form
                rows.append(
                    {
                        "sample_id": key, "dataset": "bench", "source": "CT", "source_uri": key,
                        "source_sha256": key, "modality": "CT", "task": "caption", "split": "train",
                        "images": [record], "provenance": prov,
                    }
                )
            writer.write(samples_to_table(rows))
    cat.publish("bench", [s.path for s in writer.shards], version="v1")
    return cat


def write_png_files(folder: Path, pngs: list[tuple[str, bytes]]) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for key, png in pngs:
        path = folder / f"{key}.png"
        path.write_bytes(png)
        paths.append(path)
    return paths


def write_tars(folder: Path, pngs: list[tuple[str, bytes]], per_tar: int = 200) -> list[str]:
    folder.mkdir(parents=True)
    urls = []
    for index, start in enumerate(range(0, len(pngs), per_tar)):
        path = folder / f"shard-{index:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for key, png in pngs[start : start + per_tar]:
                info = tarfile.TarInfo(f"{key}.png")
                info.size = len(png)
                tar.addfile(info, io.BytesIO(png))
        urls.append(str(path))
    return urls


class PngFiles(Dataset):  # type: ignore[type-arg]
    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        return {"sample_id": path.stem, "image": array_to_tensor(decode_png(path.read_bytes()))}


def wds_item(sample: dict[str, Any]) -> dict[str, Any]:
    return {"sample_id": sample["__key__"], "image": array_to_tensor(decode_png(sample["png"]))}


def webdataset_loader(urls: list[str], workers: int, persistent: bool) -> DataLoader:  # type: ignore[type-arg]
    import webdataset as wds

    dataset = wds.WebDataset(urls, shardshuffle=len(urls), seed=0, empty_check=False).shuffle(512).map(wds_item)
    return DataLoader(
        dataset, batch_size=BATCH, num_workers=workers, collate_fn=collate_samples, persistent_workers=persistent
    )


def png_loader(paths: list[Path], workers: int, persistent: bool) -> DataLoader:  # type: ignore[type-arg]
    """One PNG file per sample, shuffled by a seeded sampler (the baseline)."""
    return DataLoader(
        PngFiles(paths), batch_size=BATCH, shuffle=True, num_workers=workers, collate_fn=collate_samples,
        generator=torch.Generator().manual_seed(0), persistent_workers=persistent,
    )


def load() -> str:
    """The 1/5/15-minute load averages (other engineers' jobs share this machine)."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def cpu_seconds() -> float:
    """CPU time of this process plus its reaped children (DataLoader workers, once joined)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def disk_read_bytes() -> int:
    """Bytes this process and its reaped children read from the block device."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return 512 * (own.ru_inblock + children.ru_inblock)


def live_workers(loader: Any) -> dict[int, tuple[float, int]]:
    """{pid: (CPU seconds, bytes read from disk)} of a loader's running workers.

    Persistent workers are not reaped between passes, so getrusage never sees their CPU;
    their own counters (``/proc/<pid>/stat`` and ``/proc/<pid>/io``) do. torch keeps a
    persistent loader's iterator in ``DataLoader._iterator``, its processes in ``_workers``.
    """
    torch_loader = loader.loader if isinstance(loader, CatalogDataLoader) else loader
    iterator = getattr(torch_loader, "_iterator", None)
    stats: dict[int, tuple[float, int]] = {}
    for worker in getattr(iterator, "_workers", []):
        try:
            process = psutil.Process(worker.pid)
            times = process.cpu_times()
            stats[worker.pid] = (times.user + times.system, process.io_counters().read_bytes)
        except psutil.NoSuchProcess:  # died: reaped, so getrusage counts it
            continue
    return stats


def live_worker_delta(before: dict[int, tuple[float, int]], after: dict[int, tuple[float, int]]) -> tuple[float, int]:
    """(CPU seconds, disk bytes) the live workers spent between two ``live_workers`` reads
    (a worker started in between counts from zero)."""
    cpu = sum(after[pid][0] - before.get(pid, (0.0, 0))[0] for pid in after)
    read = sum(after[pid][1] - before.get(pid, (0.0, 0))[1] for pid in after)
    return cpu, read


def warm_page_cache(paths: list[str]) -> None:
    """Read a reader's files once, untimed, so its pass reads from the page cache.

    The comparison is of readers whose data is cached; on VMs that drop pages unused for a
    while (here DAMON's ``pageout`` scheme, after ~60 s), a reader whose files went cold
    would otherwise pay disk reads that the others, read more recently, do not.
    """
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(8 * 2**20):
                pass


def timed(loader: Any) -> tuple[int, float, float, int]:
    """(samples, wall seconds, CPU seconds of main process + workers, bytes read from
    disk) for one full pass; workers reaped in the pass and live (persistent) ones alike."""
    workers_before = live_workers(loader)
    start, cpu_start, disk_start = time.perf_counter(), cpu_seconds(), disk_read_bytes()
    seen = 0
    for batch in loader:
        seen += len(batch["sample_id"])
        assert batch["image"].dtype == torch.uint8
    del batch
    seconds = time.perf_counter() - start
    cpu, read = cpu_seconds() - cpu_start, disk_read_bytes() - disk_start
    live_cpu, live_read = live_worker_delta(workers_before, live_workers(loader))
    return seen, seconds, cpu + live_cpu, read + live_read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--repeats", type=int, default=3, help="passes per configuration; the best counts")
    parser.add_argument(
        "--row-group-mib", type=int, nargs="+", default=[16, 32],
        help="catalog variants by the writer's row-group budget (16 = the ShardWriter default)",
    )
    parser.add_argument(
        "--shuffle-buffer-mib", type=int, default=None,
        help="catalog loaders' shuffle_buffer_bytes in MiB (default: the loader's, 64; 0: no byte bound, "
        "only the 512-row bound, as before the byte bound existed)",
    )
    parser.add_argument(
        "--persistent", action="store_true",
        help="every reader keeps one DataLoader with persistent_workers=True across its passes; "
        "the first pass (which starts the workers) is reported apart",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*worker processes in total.*")  # 4 workers on 2 cores is the point

    with tempfile.TemporaryDirectory(prefix="bench-read-") as tmp:
        print(f"load average at start: {load()}", flush=True)
        print(f"workers: {'persistent (one DataLoader per reader for all its passes)' if args.persistent else 'new every pass'}")
        if args.shuffle_buffer_mib is not None:
            print(f"catalog shuffle_buffer_bytes: {args.shuffle_buffer_mib} MiB (0: none, 512 rows only)")
        t0 = time.perf_counter()
        pngs = make_pngs(args.samples)
        stored = as_stored(pngs)
        catalogs = {
            f"catalog-{mib}MiB": write_catalog(os.path.join(tmp, f"catalog{mib}"), stored, mib) for mib in args.row_group_mib
        }
        files = write_png_files(Path(tmp) / "png", pngs)
        stored_files = write_png_files(Path(tmp) / "png-stored", stored)
        urls = write_tars(Path(tmp) / "wds", pngs)
        mib = 2**20
        print(
            f"{args.samples} samples of 512x512 uint8 CT; on disk: PNG files {sum(len(p) for _, p in pngs) / mib:.1f} MiB, "
            f"stored-form PNG files {sum(len(p) for _, p in stored) / mib:.1f} MiB; prepared in {time.perf_counter() - t0:.1f} s"
        )
        for label, cat in catalogs.items():
            groups = cat.to_torch("bench", "v1").row_groups
            size = sum(os.path.getsize(f) for f in cat.files("bench"))
            rows = [g.num_rows for g in groups]
            row_mib = sum(len(p) for _, p in stored) / len(stored) / mib
            print(
                f"  {label}: {len(cat.files('bench'))} shard(s), {size / mib:.1f} MiB, {len(groups)} row groups of "
                f"{min(rows)}-{max(rows)} rows ({min(rows) * row_mib:.0f}-{max(rows) * row_mib:.0f} MiB of image bytes)"
            )
        results: list[dict[str, Any]] = []
        for workers in args.workers:
            persistent = args.persistent and workers > 0
            loaders: list[tuple[str, Any, list[str]]] = []  # (label, loader, the files it reads)
            for label, cat in catalogs.items():
                dataset = cat.to_torch("bench", "v1", columns=["images"], seed=0)
                if args.shuffle_buffer_mib is not None:
                    dataset.shuffle_buffer_bytes = args.shuffle_buffer_mib * 2**20 or None
                loader = CatalogDataLoader(dataset, batch_size=BATCH, num_workers=workers, persistent_workers=persistent)
                loaders.append((label, loader, cat.files("bench")))
            loaders.append(("png-files", png_loader(files, workers, persistent), [str(f) for f in files]))
            loaders.append(("webdataset", webdataset_loader(urls, workers, persistent), urls))
            loaders.append(
                ("png-files-stored", png_loader(stored_files, workers, persistent), [str(f) for f in stored_files])
            )
            first: dict[str, tuple[float, float]] = {}  # label -> (samples/s, CPU-ms/sample) of the pass that starts workers
            row: dict[str, Any] = {"workers": workers}
            cpu_row: dict[str, float] = {}
            passes: dict[str, list[tuple[float, float]]] = {}  # label -> [(samples/s, CPU-ms/sample)] per round
            disk: dict[str, int] = {}  # label -> most bytes read from disk in one pass
            # passes interleaved, the order rotated each round (A B C D, B C D A, ...), so
            # that load from other processes on this shared machine and any effect of the
            # position in a round hit every reader alike; the best pass counts (the first
            # also pays warm-up: thread pools, allocations). With persistent workers, an
            # extra first round starts every reader's workers and is reported apart.
            for round_index in range(args.repeats + (1 if persistent else 0)):
                shift = round_index % len(loaders)
                for label, loader, paths in loaders[shift:] + loaders[:shift]:
                    warm_page_cache(paths)
                    seen, seconds, cpu, read = timed(loader)
                    if seen != args.samples:
                        raise SystemExit(f"{label} with {workers} workers delivered {seen} of {args.samples} samples")
                    if persistent and round_index == 0:
                        first[label] = (seen / seconds, 1000.0 * cpu / seen)
                        continue
                    disk[label] = max(disk.get(label, 0), read)
                    row[label] = max(row.get(label, 0.0), seen / seconds)
                    cpu_row[label] = min(cpu_row.get(label, float("inf")), 1000.0 * cpu / seen)
                    passes.setdefault(label, []).append((seen / seconds, 1000.0 * cpu / seen))
            results.append({
                **row, "persistent": persistent, "cpu_ms_per_sample": cpu_row, "passes": passes,
                "first_pass": first, "disk_bytes_max": disk, "load": load(),
            })
            rates = ", ".join(f"{k} {v:.0f}/s ({cpu_row[k]:.2f} CPU-ms)" for k, v in row.items() if k != "workers")
            ratios = ", ".join(
                f"{k}/png-files {v / row['png-files']:.2f}x wall {cpu_row['png-files'] / cpu_row[k]:.2f}x CPU, "
                f"{k}/webdataset {v / row['webdataset']:.2f}x wall {cpu_row['webdataset'] / cpu_row[k]:.2f}x CPU"
                for k, v in row.items() if k.startswith("catalog")
            )
            print(f"workers={workers}: {rates}; {ratios}", flush=True)
            for label in (k for k in row if k.startswith("catalog")):
                rounds = zip(passes[label], passes["png-files"], strict=True)
                per_round = "; ".join(f"{c[0] / p[0]:.2f}x wall {p[1] / c[1]:.2f}x CPU" for c, p in rounds)
                print(f"  {label}/png-files per round: {per_round}", flush=True)
            if first:
                starts = ", ".join(f"{k} {rate:.0f}/s ({cpu:.2f} CPU-ms)" for k, (rate, cpu) in first.items())
                print(f"  first pass (starts the persistent workers, not counted above): {starts}", flush=True)
            print(f"  most read from disk in one pass (MiB): {', '.join(f'{k} {v / 2**20:.0f}' for k, v in disk.items())}")
            print(f"  load average: {load()}", flush=True)
            del loaders, loader  # persistent workers exit here, before the next worker count
        print(json.dumps({"machine": f"{os.cpu_count()} CPU, {platform.machine()}", "results": results}))


if __name__ == "__main__":
    main()
