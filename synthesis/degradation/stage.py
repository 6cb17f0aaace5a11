"""``DegradeStage``: canonical samples in, clean/degraded restoration pairs out.

For every input row and every (kind, severity) its modality's plan names, the stage
emits one new canonical row: ``images = [clean, degraded]`` (PNG, same size),
``degradation`` (type, severity, params_json, psnr_db, ssim), ``quality`` (verdict and
the description ending "Overall, the quality of this image is ..."), task
``restoration``, a deterministic ``sample_id`` and provenance with this step appended.

CT prefers the 16-bit ``raw`` image (``png * value_scale + value_offset`` = HU) so the
physics runs on real attenuation values; without it, the 8-bit ``input`` is mapped back
through its VOI window (approximate, clipped HU). CT pairs are written as 8-bit PNGs on
the measurement window (level 40 / width 400 HU), so PSNR re-measured from the PNGs
matches the recorded ``psnr_db``; other modalities are written as 8-bit like their input.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from curation.ids import stable_hash
from curation.images import decode_png, image_record, to_uint8_window
from curation.schema import SAMPLE_SCHEMA
from curation.stages import Reject, Resources, Stage, StageOutput
from quality_checks.metrics import psnr_band
from synthesis.degradation.calibration import SEVERITY_BANDS

STEP_NAME = "degrade"
CT_WINDOW = (40.0, 400.0)  # centre, width: the measurement window of metrics.CT_WINDOW_HU


@dataclass(frozen=True)
class DegradationPlan:
    """Which kinds and severities to apply per modality, and the base seed.

    ``kinds`` maps modality -> kind names (``None``: every kind of ``synthesis.KINDS``
    for that modality; modalities without an entry use the ``OTHER`` entry if present,
    else their rows are rejected as ``not_planned``).
    """

    kinds: Mapping[str, Sequence[str]] | None = None
    severities: tuple[int, ...] = (1, 2, 3)
    seed: int = 0

    def kinds_for(self, modality: str) -> tuple[str, ...]:
        from synthesis.degradation.api import KINDS

        table = self.kinds if self.kinds is not None else KINDS
        if modality in table:
            return tuple(table[modality])
        if modality == "CT" or "OTHER" not in table:
            return ()
        return tuple(table["OTHER"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "kinds": {k: list(v) for k, v in self.kinds.items()} if self.kinds is not None else "all",
            "severities": list(self.severities),
            "seed": self.seed,
        }


def derived_seed(parent_id: str, kind: str, severity: int, seed: int) -> int:
    """The seed of one output: independent of batching and of the order of rows."""
    return int(stable_hash(parent_id, kind, severity, seed, length=15), 16)


@dataclass
class _Parent:
    index: int
    row: dict[str, Any]
    values: np.ndarray  # HU for CT, [0, 1] otherwise; [H, W] or [H, W, 3]
    spacing: list[float] | None
    window: tuple[float, float] | None


@dataclass
class DegradeStage(Stage):
    """Apply a :class:`DegradationPlan` to canonical sample rows (see module docstring)."""

    plan: DegradationPlan = field(default_factory=DegradationPlan)
    #: CT image sizes whose Radon/FBP operators ``setup`` builds ahead of the first batch
    prewarm_sizes: tuple[int, ...] = (512,)
    device: str | None = None

    name = "degrade"
    batch_size = 16
    output_schema = SAMPLE_SCHEMA

    def __post_init__(self) -> None:
        self._cache: Any = None
        self._device: Any = None

    @property
    def resources(self) -> Resources:  # type: ignore[override]
        import torch

        gpus = 1.0 if torch.cuda.is_available() else 0.0
        return Resources(cpus=1.0, gpus=gpus, memory_gb=4.0)

    def params(self) -> dict[str, Any]:
        return {"plan": self.plan.as_dict()}

    def setup(self) -> None:
        """Pick the device and precompute the CT operators the plan will need."""
        import torch

        from synthesis.degradation import ct
        from synthesis.degradation.levels import LEVELS
        from synthesis.degradation.registry import Context, OperatorCache

        self._device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._cache = OperatorCache()
        ctx = Context("CT", None, self._device, self._cache)
        for kind in self.plan.kinds_for("CT"):
            for severity in self.plan.severities:
                level = LEVELS[kind][severity]
                for size in self.prewarm_sizes:
                    for views, arc in _ct_geometries(kind, level):
                        ct.radon_operator(ctx, size, views, arc)

    def teardown(self) -> None:
        self._cache = None

    # -- processing ----------------------------------------------------------------------
    def process(self, batch: pa.Table) -> StageOutput:
        if self._cache is None:
            self.setup()
        rows = batch.to_pylist()
        rejects: list[Reject] = []
        groups: dict[tuple[str, tuple[int, ...], float | None], list[_Parent]] = defaultdict(list)
        for index, row in enumerate(rows):
            parent, reject = self._parent(index, row)
            if reject is not None:
                rejects.append(reject)
                continue
            assert parent is not None
            pixel = min(parent.spacing) if parent.spacing else None
            groups[(row["modality"], parent.values.shape, pixel)].append(parent)
        outputs: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for (modality, _, pixel), parents in groups.items():
            for kind in self.plan.kinds_for(modality):
                for severity in self.plan.severities:
                    self._degrade_group(modality, kind, severity, pixel, parents, outputs, rejects)
        ordered = [out for index in sorted(outputs) for out in outputs[index]]
        table = pa.Table.from_pylist(ordered, schema=SAMPLE_SCHEMA) if ordered else SAMPLE_SCHEMA.empty_table()
        return StageOutput(table, rejects)

    def _reject(self, row: dict[str, Any], reason: str, detail: str) -> Reject:
        return Reject(str(row.get("source_uri") or row.get("sample_id") or "?"), self.name, reason, detail)

    def _parent(self, index: int, row: dict[str, Any]) -> tuple[_Parent | None, Reject | None]:
        """Decode the image the physics runs on, or say why the row cannot be used."""
        modality = row.get("modality") or ""
        if not self.plan.kinds_for(modality):
            return None, self._reject(row, "not_planned", f"no degradation kinds planned for modality {modality!r}")
        images = {img["role"]: img for img in (row.get("images") or [])}
        sid = row.get("sample_id")
        try:
            if modality == "CT":
                values, source = _ct_values(images)
            else:
                found = images.get("input")
                if found is None:
                    raise ValueError(f"no 'input' image among roles {sorted(images)}")
                values, source = _unit_values(found), found
        except Exception as exc:  # noqa: BLE001 - any decoding problem is this row's reject
            return None, self._reject(row, "undecodable_image", f"sample {sid}: {exc}")
        if min(values.shape[:2]) < 16:
            return None, self._reject(row, "image_too_small", f"sample {sid}: image {values.shape[:2]} is below 16x16 pixels")
        window = None
        if source.get("window"):
            window = (float(source["window"]["center"]), float(source["window"]["width"]))
        return _Parent(index, row, values, source.get("spacing_mm"), window), None

    def _degrade_group(
        self,
        modality: str,
        kind: str,
        severity: int,
        pixel: float | None,
        parents: list[_Parent],
        outputs: dict[int, list[dict[str, Any]]],
        rejects: list[Reject],
    ) -> None:
        from synthesis.degradation.api import degrade

        seeds = [derived_seed(p.row["sample_id"], kind, severity, self.plan.seed) for p in parents]
        try:
            result = degrade(
                np.stack([p.values for p in parents]),
                modality=modality,
                kind=kind,
                severity=severity,
                seed=seeds,
                spacing_mm=pixel,
                device=self._device,
                cache=self._cache,
            )
        except Exception as exc:  # noqa: BLE001 - fall back to one row at a time to isolate the bad one
            if len(parents) > 1:
                for parent in parents:
                    self._degrade_group(modality, kind, severity, pixel, [parent], outputs, rejects)
                return
            rejects.append(self._reject(parents[0].row, "degradation_failed", f"{kind} severity {severity}: {exc}"))
            return
        degraded_images = result.image
        band = psnr_band(SEVERITY_BANDS, kind, severity)  # the gate's own rule (metrics.severity_consistent)
        for i, parent in enumerate(parents):
            record = result.records[i]
            if band is not None and record.psnr_db is not None and not band[0] <= record.psnr_db <= band[1]:
                # the level's parameters gave this image another quality than the severity
                # names (content unlike the calibration set): its label would be wrong, so
                # the pair is a reject, not a row the gate then fails the whole build on
                rejects.append(self._reject(
                    parent.row, "severity_out_of_band",
                    f"sample {parent.row.get('sample_id')}: {kind} severity {severity} measured "
                    f"{record.psnr_db:.1f} dB, calibrated band [{band[0]}, {band[1]}] dB",
                ))
                continue
            outputs[parent.index].append(self._output_row(parent, modality, record, degraded_images[i], seeds[i]))

    def _output_row(self, parent: _Parent, modality: str, record: Any, degraded: np.ndarray, seed: int) -> dict[str, Any]:
        row = parent.row
        clean_img, degraded_img = _encode_pair(modality, parent, degraded)
        steps = _parent_steps(row)
        steps.append(
            {
                "name": STEP_NAME,
                "kind": record.kind,
                "severity": record.severity,
                "seed": seed,
                "parent_sample_id": row["sample_id"],
                "params": record.params,
            }
        )
        provenance = dict(row["provenance"])
        provenance["steps_json"] = json.dumps(steps, sort_keys=True)
        return {
            "sample_id": stable_hash(row["sample_id"], record.kind, record.severity, seed),
            "dataset": row["dataset"],
            "source": row["source"],
            "source_uri": row["source_uri"],
            "source_sha256": row["source_sha256"],
            "modality": modality,
            "task": "restoration",
            "split": row["split"],
            "subject_key": row.get("subject_key"),
            "images": [clean_img, degraded_img],
            "masks": None,
            "video": None,
            "conversations": None,
            "caption": None,
            "labels": row.get("labels"),
            "degradation": {
                "type": record.kind,
                "severity": record.severity,
                "params_json": record.params_json,
                "psnr_db": record.psnr_db,
                "ssim": record.ssim,
            },
            "quality": {"verdict": record.verdict, "description": record.description},
            "curriculum_stage": row.get("curriculum_stage"),
            "provenance": provenance,
        }


def _ct_geometries(kind: str, level: Mapping[str, Any]) -> list[tuple[int, float]]:
    """(views, arc) of every operator a CT kind at this level uses."""
    if kind == "sparse_view":
        return [(level["views"], 180.0), (level["reference_views"], 180.0)]
    if kind == "limited_angle":
        views = round(level["reference_views"] * level["arc_deg"] / 180.0)
        return [(views, level["arc_deg"]), (level["reference_views"], 180.0)]
    return [(level["views"], 180.0)]


def _ct_values(images: Mapping[str, Mapping[str, Any]]) -> tuple[np.ndarray, Mapping[str, Any]]:
    raw = images.get("raw")
    if raw is not None and raw.get("value_scale") is not None:
        stored = decode_png(raw["data"]).astype(np.float32)
        if stored.ndim != 2:
            raise ValueError(f"CT raw image must be single-channel, got shape {stored.shape}")
        hu = stored * np.float32(raw["value_scale"]) + np.float32(raw.get("value_offset") or 0.0)
        window_source = images.get("input") or raw
        merged = dict(raw)
        merged["window"] = window_source.get("window") or raw.get("window")
        return hu.astype(np.float32), merged
    source = images.get("input")
    if source is None or not source.get("window"):
        raise ValueError("CT needs a 'raw' image with value_scale/value_offset, or an 'input' image with its VOI window")
    pixels = decode_png(source["data"]).astype(np.float32)
    if pixels.ndim != 2:
        pixels = pixels[..., :3].mean(axis=-1)
    centre, width = float(source["window"]["center"]), float(source["window"]["width"])
    hu = centre - width / 2 + pixels / 255.0 * width
    return hu.astype(np.float32), source


def _unit_values(image: Mapping[str, Any]) -> np.ndarray:
    pixels = decode_png(image["data"])
    if pixels.dtype == bool:
        raise ValueError("the input image is a 1-bit mask, not an image")
    scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    values = pixels.astype(np.float32) / np.float32(scale)
    if values.ndim == 3:
        values = values[..., :3] if values.shape[-1] >= 3 else values[..., 0]
    return np.ascontiguousarray(values)


def _encode_pair(modality: str, parent: _Parent, degraded: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    spacing = parent.spacing
    if modality == "CT":
        centre, width = CT_WINDOW
        low, high = centre - width / 2, centre + width / 2
        clean8 = to_uint8_window(parent.values, low, high)
        degraded8 = to_uint8_window(degraded, low, high)
        return (
            image_record("clean", clean8, spacing_mm=spacing, window=CT_WINDOW),
            image_record("degraded", degraded8, spacing_mm=spacing, window=CT_WINDOW),
        )

    def to8(values: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)

    return (
        image_record("clean", to8(parent.values), spacing_mm=spacing),
        image_record("degraded", to8(degraded), spacing_mm=spacing),
    )


def _parent_steps(row: Mapping[str, Any]) -> list[Any]:
    provenance = row.get("provenance") or {}
    try:
        steps = json.loads(provenance.get("steps_json") or "[]")
    except ValueError:
        steps = [{"unparsed_steps_json": provenance.get("steps_json")}]
    return steps if isinstance(steps, list) else [steps]
