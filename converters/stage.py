"""The conversion stage: work items in, canonical samples and rejects out.

With ``ConvertOptions.item_timeout_s`` set, every item is converted in a killable worker
process (:class:`converters.guard.ItemGuard`) so that no input can hold a worker longer
than that; without it, items convert in-process (fastest, what tests and small runs use).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pyarrow as pa

from converters.base import ConversionError, ConvertOptions
from converters.dicom import convert_dicom_item, iter_dicom_item
from converters.guard import ItemGuard
from converters.raster import convert_raster_item
from converters.video_item import convert_video_item
from converters.volume import convert_volume_item, iter_volume_item
from curation.schema import SAMPLE_SCHEMA, samples_to_table
from curation.stages import Reject, Resources, Stage, StageOutput

log = logging.getLogger(__name__)

Converter = Callable[[dict[str, Any], ConvertOptions], list[dict[str, Any]]]

#: converters that yield rows one by one (3D inputs: hundreds of slices per item)
STREAMING: dict[str, Callable[[dict[str, Any], ConvertOptions], Iterator[dict[str, Any]]]] = {
    "dicom": iter_dicom_item,
    "volume": iter_volume_item,
}

#: rows per piece a streaming conversion hands on (≈ 16 MB of 512×512 CT slices)
PIECE_ROWS = 32

CONVERTERS: dict[str, Converter] = {
    "dicom": convert_dicom_item,
    "volume": convert_volume_item,
    "raster": convert_raster_item,
    "video": convert_video_item,
}


def _run_converter(kind: str, item: dict[str, Any], opts: ConvertOptions) -> list[dict[str, Any]]:
    """Module-level (picklable) entry point for the guarded worker process."""
    return CONVERTERS[kind](item, opts)


def _run_streaming_converter(item: dict[str, Any], opts: ConvertOptions) -> tuple[list[dict[str, Any]], Reject | None]:
    """A streaming converter's rows and its reject together, in the guarded worker
    process: as without the guard, a series whose one file failed keeps its other slices."""
    rows: list[dict[str, Any]] = []
    reject: Reject | None = None
    for piece, piece_reject in iter_item_pieces(item, opts):
        rows.extend(piece)
        reject = piece_reject or reject
    return rows, reject


def convert_streaming_item_guarded(
    item: dict[str, Any], opts: ConvertOptions, guard: ItemGuard
) -> tuple[list[dict[str, Any]], Reject | None]:
    """A streaming item in the guard's worker: its rows and its reject (both when a
    series kept some slices); a timeout or a crashed worker is the item's reject."""
    try:
        return guard.call(_run_streaming_converter, item, opts, what=item["key"])  # type: ignore[no-any-return]
    except ConversionError as err:
        return [], Reject(item["key"], ConvertStage.name, err.reason, err.detail)


def _as_reject(item: dict[str, Any], exc: Exception) -> Reject:
    """A converter's exception as the item's reject (the run never stops for an input)."""
    if isinstance(exc, ConversionError):
        return Reject(item["key"], ConvertStage.name, exc.reason, exc.detail)
    log.warning("converter crashed on %s:\n%s", item["key"], traceback.format_exc())
    return Reject(item["key"], ConvertStage.name, "converter_error", f"{item['key']}: {type(exc).__name__}: {str(exc)[:300]}")


def iter_item_pieces(
    item: dict[str, Any], opts: ConvertOptions, piece_rows: int = PIECE_ROWS
) -> Iterator[tuple[list[dict[str, Any]], Reject | None]]:
    """A streaming converter's rows in pieces of ``piece_rows``; a failure part-way ends
    the item with a reject after the rows already converted (whose slices were good)."""
    rows: list[dict[str, Any]] = []
    produced = 0
    try:
        for row in STREAMING[item["kind"]](item, opts):
            rows.append(row)
            produced += 1
            if len(rows) >= piece_rows:
                yield rows, None
                rows = []
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - every input fault becomes a reject
        yield rows, _as_reject(item, exc)
        return
    if produced == 0:
        yield [], Reject(item["key"], ConvertStage.name, "no_samples", f"{item['key']}: the slice policy selected nothing")
        return
    yield rows, None


def convert_item(
    item: dict[str, Any], opts: ConvertOptions, guard: ItemGuard | None = None
) -> tuple[list[dict[str, Any]], Reject | None]:
    """Rows of one item, or a reject saying why there are none. Never raises.

    With a ``guard`` the converter runs in its worker process under its time limit.
    """
    converter = CONVERTERS.get(item["kind"])
    if converter is None:
        return [], Reject(item["key"], ConvertStage.name, "unsupported_format", f"no converter for kind {item['kind']!r}")
    try:
        if guard is not None:
            rows = guard.call(_run_converter, item["kind"], item, opts, what=item["key"])
        else:
            rows = converter(item, opts)
    except ConversionError as err:
        return [], Reject(item["key"], ConvertStage.name, err.reason, err.detail)
    except MemoryError:
        raise
    except Exception as exc:  # a converter bug must not stop the run; keep the trace in the log
        log.warning("converter crashed on %s:\n%s", item["key"], traceback.format_exc())
        return [], Reject(
            item["key"], ConvertStage.name, "converter_error", f"{item['key']}: {type(exc).__name__}: {str(exc)[:300]}"
        )
    if not rows:
        return [], Reject(item["key"], ConvertStage.name, "no_samples", f"{item['key']}: the slice policy selected nothing")
    return rows, None


class ConvertStage(Stage):
    """Reads each work item with the converter for its kind."""

    name: ClassVar[str] = "convert"
    resources = Resources(cpus=1, memory_gb=2)
    batch_size = 8
    output_schema = SAMPLE_SCHEMA

    def __init__(self, options: ConvertOptions):
        self.options = options
        self._guard: ItemGuard | None = None

    def setup(self) -> None:
        if self.options.item_timeout_s and self._guard is None:
            self._guard = ItemGuard(self.options.item_timeout_s)

    def __getstate__(self) -> dict[str, Any]:
        """Stages travel to Dask/Ray workers; the guard's worker process does not."""
        state = dict(self.__dict__)
        state["_guard"] = None
        return state

    def teardown(self) -> None:
        if self._guard is not None:
            self._guard.close()
            self._guard = None

    def process(self, batch: pa.Table) -> StageOutput:
        rows: list[dict[str, Any]] = []
        rejects: list[Reject] = []
        for piece in self.process_stream(batch):
            rows.extend(piece.table.to_pylist())
            rejects.extend(piece.rejects)
        return StageOutput(samples_to_table(rows), rejects)

    def process_stream(self, batch: pa.Table) -> Iterator[StageOutput]:
        """Items one by one; 3D items in pieces, so memory holds a piece, not a series."""
        if self.options.item_timeout_s and self._guard is None:
            self.setup()
        rows: list[dict[str, Any]] = []
        rejects: list[Reject] = []
        for item in batch.to_pylist():
            if self._guard is None and item["kind"] in STREAMING:
                for piece, reject in iter_item_pieces(item, self.options):
                    rows.extend(piece)
                    if reject is not None:
                        rejects.append(reject)
                    if len(rows) >= PIECE_ROWS:
                        yield StageOutput(samples_to_table(rows), rejects)
                        rows, rejects = [], []
                continue
            if self._guard is not None and item["kind"] in STREAMING:
                converted, reject = convert_streaming_item_guarded(item, self.options, self._guard)
            else:
                converted, reject = convert_item(item, self.options, self._guard)
            rows.extend(converted)
            if reject is not None:
                rejects.append(reject)
            if len(rows) >= PIECE_ROWS:
                yield StageOutput(samples_to_table(rows), rejects)
                rows, rejects = [], []
        if rows or rejects:
            yield StageOutput(samples_to_table(rows), rejects)

    def params(self) -> dict[str, Any]:
        return {"options": self.options.fingerprint()}
