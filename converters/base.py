"""Shared vocabulary of the converters: work items, options, errors, slice policies.

A converter reads one unimodal *item* (a DICOM series, a volume with its label maps, a
raster) and returns canonical sample rows, or raises :class:`ConversionError` with a
short reason code and a sentence of detail. The conversion stage turns that error
into a :class:`~curation.stages.Reject`, so bad input never stops a run.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Literal, get_args

import pyarrow as pa

#: one row per unit of conversion, as discovery emits and the conversion stage reads
WORK_ITEM_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),  # primary file (absolute fsspec uri)
        pa.field("key", pa.string(), nullable=False),  # location relative to the source root
        pa.field("kind", pa.string(), nullable=False),  # dicom | volume | raster
        pa.field("members", pa.list_(pa.string())),  # all files of a DICOM series
        pa.field("label_uris", pa.list_(pa.string())),  # label maps attached to the image
        pa.field("sha256", pa.string(), nullable=False),  # content hash of all files
        pa.field("size_bytes", pa.int64(), nullable=False),
        # JSON of what the layout says about the item (class folder, dataset.json label
        # names and modality, channel, archive member); null for plain files
        pa.field("attrs", pa.string()),
    ]
)

KINDS_OF_ITEM = ("dicom", "volume", "raster", "video")


class ConversionError(Exception):
    """An item cannot be converted. ``reason`` is a stable code, ``detail`` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with both arguments: with ``--item-timeout`` the error crosses from the
        worker process, and an unpicklable one broke the pool (every reject read
        ``worker_crashed``)."""
        return (type(self), (self.reason, self.detail))


@dataclasses.dataclass(frozen=True)
class SlicePolicy:
    """Which slices of a 3D input become samples: ``all``, ``every:N`` or ``middle``."""

    mode: str = "all"
    step: int = 1

    @classmethod
    def parse(cls, text: str) -> SlicePolicy:
        text = text.strip().lower()
        if text in ("all", "middle"):
            return cls(text)
        match = re.fullmatch(r"every[:=-]?(\d+)", text)
        if match and int(match.group(1)) >= 1:
            return cls("every", int(match.group(1)))
        raise ValueError(f"--slices must be 'all', 'middle' or 'every:N' (N ≥ 1), got {text!r}")

    def select(self, count: int) -> list[int]:
        """Indices of the slices to keep out of ``count``."""
        if count <= 0:
            return []
        if self.mode == "middle":
            return [count // 2]
        return list(range(0, count, self.step if self.mode == "every" else 1))

    def __str__(self) -> str:
        return f"every:{self.step}" if self.mode == "every" else self.mode


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    """Everything a converter needs besides the item; part of every partition's cache key."""

    dataset: str
    source: str
    salt: str
    slices: SlicePolicy = SlicePolicy()
    modality: str | None = None  # for inputs without a modality header (rasters, volumes)
    subject_pattern: str | None = None  # regex on the relative key; group 1 is the subject
    allow_burned_in: bool = False
    # "declared": reject BurnedInAnnotation=YES; "strict": also images of modalities that
    # often carry burned-in text (converters/dicom.py BURNED_IN_PRONE) unless it is NO
    burned_in: str = "declared"
    hash_source_uri: bool = False
    label_names: tuple[tuple[int, str], ...] = ()  # label value → name, for label maps
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    pipeline_version: str = "0"
    run_id: str = "local"
    deid_dates: str = "shift"  # DICOM dates: shift (per-subject salted offset) | remove
    item_timeout_s: float | None = None  # wall-clock limit per item (None: no guard), see converters/guard.py
    video_clip_s: float = 10.0  # longest clip cut from a video file at shot boundaries
    video_fps: float | None = None  # re-encode frame rate of video clips (None: the source's)
    video_size: tuple[int, int] | None = None  # (width, height) of video clips (None: the source's)

    def fingerprint(self) -> str:
        """JSON of the options that change conversion output: all but the run id. The item
        timeout is in: it decides which items become ``timeout`` rejects, and a rebuild
        with a longer one must retry them (changing it redoes the dataset's partitions)."""
        data = dataclasses.asdict(self)
        data.pop("run_id")
        data["slices"] = str(self.slices)
        return json.dumps(data, sort_keys=True, default=str)


#: ``ConvertOptions.deid_dates``: DICOM dates shifted per subject, or removed
DatePolicy = Literal["shift", "remove"]
DATE_POLICIES: tuple[str, ...] = get_args(DatePolicy)
#: ``ConvertOptions.burned_in``: what the header must say for pixels to be kept
BurnedInPolicy = Literal["declared", "strict"]
BURNED_IN_POLICIES: tuple[str, ...] = get_args(BurnedInPolicy)


def date_policy(value: object) -> str:
    """``value`` when it names a DICOM date policy; a ValueError naming the choices otherwise."""
    policy = str(value)
    if policy not in DATE_POLICIES:
        raise ValueError(f"dates must be one of {list(DATE_POLICIES)}, got {policy!r}")
    return policy


def burned_in_policy(value: object) -> str:
    """The burned-in policy named by an option (None: the default, ``declared``)."""
    policy = str(value or "declared")
    if policy not in BURNED_IN_POLICIES:
        raise ValueError(f"burned_in must be one of {list(BURNED_IN_POLICIES)}, got {policy!r}")
    return policy


def json_dumps(value: Any) -> str:
    """Compact, key-sorted JSON: provenance strings compare equal across runs."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
