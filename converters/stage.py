"""The conversion stage: work items in, canonical samples and rejects out.

With ``ConvertOptions.item_timeout_s`` set, every item is converted in a killable worker
process (:class:`converters.guard.ItemGuard`) so that no input can hold a worker longer
than that; without it, items convert in-process (fastest, what tests and small runs use).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any, ClassVar

import pyarrow as pa

from converters.base import ConversionError, ConvertOptions
from converters.dicom import convert_dicom_item
from converters.guard import ItemGuard
from converters.raster import convert_raster_item
from converters.video_item import convert_video_item
from converters.volume import convert_volume_item
from curation.schema import SAMPLE_SCHEMA, samples_to_table
from curation.stages import Reject, Resources, Stage, StageOutput

log = logging.getLogger(__name__)

Converter = Callable[[dict[str, Any], ConvertOptions], list[dict[str, Any]]]

CONVERTERS: dict[str, Converter] = {
    "dicom": convert_dicom_item,
    "volume": convert_volume_item,
    "raster": convert_raster_item,
    "video": convert_video_item,
}


def _run_converter(kind: str, item: dict[str, Any], opts: ConvertOptions) -> list[dict[str, Any]]:
    """Module-level (picklable) entry point for the guarded worker process."""
    return CONVERTERS[kind](item, opts)


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

    def teardown(self) -> None:
        if self._guard is not None:
            self._guard.close()
            self._guard = None

    def process(self, batch: pa.Table) -> StageOutput:
        if self.options.item_timeout_s and self._guard is None:
            self.setup()
        rows: list[dict[str, Any]] = []
        rejects: list[Reject] = []
        for item in batch.to_pylist():
            converted, reject = convert_item(item, self.options, self._guard)
            rows.extend(converted)
            if reject is not None:
                rejects.append(reject)
        return StageOutput(samples_to_table(rows), rejects)

    def params(self) -> dict[str, Any]:
        return {"options": self.options.fingerprint()}
