"""The conversion stage: work items in, canonical samples and rejects out."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any, ClassVar

import pyarrow as pa

from converters.base import ConversionError, ConvertOptions
from converters.dicom import convert_dicom_item
from converters.raster import convert_raster_item
from converters.volume import convert_volume_item
from curation.schema import SAMPLE_SCHEMA, samples_to_table
from curation.stages import Reject, Resources, Stage, StageOutput

log = logging.getLogger(__name__)

Converter = Callable[[dict[str, Any], ConvertOptions], list[dict[str, Any]]]

CONVERTERS: dict[str, Converter] = {
    "dicom": convert_dicom_item,
    "volume": convert_volume_item,
    "raster": convert_raster_item,
}


def convert_item(item: dict[str, Any], opts: ConvertOptions) -> tuple[list[dict[str, Any]], Reject | None]:
    """Rows of one item, or a reject saying why there are none. Never raises."""
    converter = CONVERTERS.get(item["kind"])
    if converter is None:
        return [], Reject(item["key"], ConvertStage.name, "unsupported_format", f"no converter for kind {item['kind']!r}")
    try:
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

    def process(self, batch: pa.Table) -> StageOutput:
        rows: list[dict[str, Any]] = []
        rejects: list[Reject] = []
        for item in batch.to_pylist():
            converted, reject = convert_item(item, self.options)
            rows.extend(converted)
            if reject is not None:
                rejects.append(reject)
        return StageOutput(samples_to_table(rows), rejects)

    def params(self) -> dict[str, Any]:
        return {"options": self.options.fingerprint()}
