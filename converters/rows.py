"""Assemble canonical sample rows from what a converter produced."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from converters.base import ConvertOptions, json_dumps
from curation.ids import sample_id, stable_hash, subject_pseudonym
from curation.splits import split_for_subject


def public_key(key: str, opts: ConvertOptions) -> str:
    """The ``source_uri`` stored in shards: relative to the source root, hashed on request.

    File names are not trusted to be PHI-free; ``hash_source_uri`` replaces the path with
    a salted hash while keeping the inner key (``#slice=3``) readable.
    """
    if not opts.hash_source_uri:
        return key
    path, sep, inner = key.partition("#")
    return "h-" + stable_hash(opts.salt, path, length=24) + sep + inner


def subject_from_key(key: str, opts: ConvertOptions) -> str:
    """The raw subject identifier of a file without a patient header.

    With ``subject_pattern`` (a regex on the relative key) group 1 names the subject;
    otherwise the file itself is its own subject.
    """
    path = key.split("#", 1)[0]
    if opts.subject_pattern:
        match = re.search(opts.subject_pattern, path)
        if match:
            return match.group(1) if match.groups() else match.group(0)
    return path


def build_row(
    opts: ConvertOptions,
    *,
    key: str,
    sha256: str,
    modality: str,
    subject_id: str,
    images: list[dict[str, Any]],
    steps: list[dict[str, Any]],
    task: str = "caption",
    variant: str = "",
    masks: list[dict[str, Any]] | None = None,
    caption: str | None = None,
    labels: list[str] | None = None,
    video: dict[str, Any] | None = None,
    conversations: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """One row of the canonical schema with ids, split and provenance filled in."""
    subject_key = subject_pseudonym(subject_id, opts.salt)
    return {
        "sample_id": sample_id(opts.dataset, opts.source, key, task, variant),
        "dataset": opts.dataset,
        "source": opts.source,
        "source_uri": public_key(key, opts),
        "source_sha256": sha256,
        "modality": modality,
        "task": task,
        "split": split_for_subject(subject_key, opts.split_ratios),
        "subject_key": subject_key,
        "images": images,
        "masks": masks,
        "video": video,
        "conversations": conversations,
        "caption": caption,
        "labels": labels,
        "degradation": None,
        "quality": None,
        "curriculum_stage": None,
        "provenance": {
            "pipeline_version": opts.pipeline_version,
            "steps_json": json_dumps(steps),
            "run_id": opts.run_id,
            "created_at": dt.datetime.now(dt.UTC),
        },
    }
