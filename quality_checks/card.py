"""The dataset card: what a person looks at before training on a published version.

``write_dataset_card`` writes ``README.md`` (counts by modality/task/split/source,
rejects by reason, gate summary, links), ``card.html`` (the same Markdown rendered
with the ``markdown`` package) and PNGs: a contact sheet of sample images with their
masks drawn and captions, degradation panels (clean vs each severity), and histograms
of the key metrics. Figures use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import io
import os
import textwrap
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quality_checks.metrics import PRIMARY_ROLE_ORDER, MetricsStage

COUNT_COLUMNS: tuple[str, ...] = ("modality", "task", "split", "source")
#: metrics drawn as histograms, with axis labels
HISTOGRAM_METRICS: dict[str, str] = {
    "blur_laplacian_var": "variance of Laplacian (sharpness)",
    "dynamic_range": "dynamic range (fraction of full scale)",
    "black_fraction": "fraction of black pixels",
    "mask_area_fraction_min": "smallest mask area / image area",
    "caption_length": "caption length (characters)",
    "instruction_length": "last answer length (characters)",
    "degradation_psnr_db": "declared PSNR of degraded image (dB)",
    "video_duration_s": "clip duration (s)",
}
CONTACT_SHEET_SAMPLES = 12
SAMPLE_ROWS_PER_CARD = 256
MASK_COLOURS = np.array(
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230]],
    dtype=np.float32,
) / 255.0


def _read(path: str, columns: Sequence[str] | None = None) -> pa.Table:
    fs, inner = fsspec.core.url_to_fs(path)
    with fs.open(inner, "rb") as handle:
        return pq.read_table(handle, columns=list(columns) if columns else None)


def _load(table_or_shards: pa.Table | Sequence[str]) -> tuple[pa.Table, pa.Table]:
    """(table of light columns of every row, table of full rows for pictures)."""
    if isinstance(table_or_shards, pa.Table):
        light = [c for c in (*COUNT_COLUMNS, "dataset", "subject_key") if c in table_or_shards.schema.names]
        return table_or_shards.select(light), table_or_shards.slice(0, SAMPLE_ROWS_PER_CARD)
    light_parts, full_parts, full_rows = [], [], 0
    for path in table_or_shards:
        with fsspec.open(path, "rb") as handle:
            schema_names = pq.read_schema(handle).names
        light_parts.append(_read(path, [c for c in (*COUNT_COLUMNS, "dataset", "subject_key") if c in schema_names]))
        if full_rows < SAMPLE_ROWS_PER_CARD:
            part = _read(path)
            full_parts.append(part)
            full_rows += part.num_rows
    if not light_parts:
        raise ValueError("write_dataset_card needs a table or at least one shard path")
    full = pa.concat_tables(full_parts, promote_options="default").slice(0, SAMPLE_ROWS_PER_CARD)
    return pa.concat_tables(light_parts, promote_options="default"), full


def _counts_markdown(table: pa.Table, column: str) -> str:
    if column not in table.schema.names or table.num_rows == 0:
        return "_none_\n"
    counts = sorted(((str(c["values"]), c["counts"]) for c in table.column(column).value_counts().to_pylist()),
                    key=lambda item: (-item[1], item[0]))
    lines = [f"| {column} | samples | share |", "|---|---:|---:|"]
    lines += [f"| {value} | {count} | {count / table.num_rows:.1%} |" for value, count in counts]
    return "\n".join(lines) + "\n"


def _rejects_markdown(rejects: pa.Table | None) -> str:
    if rejects is None or rejects.num_rows == 0:
        return "No input was rejected.\n"
    keys = [c for c in ("stage", "reason") if c in rejects.schema.names]
    grouped = rejects.group_by(keys).aggregate([(keys[-1], "count")]).to_pylist()
    grouped.sort(key=lambda row: -row[f"{keys[-1]}_count"])
    lines = ["| " + " | ".join(keys) + " | inputs |", "|" + "---|" * len(keys) + "---:|"]
    lines += ["| " + " | ".join(str(row[k]) for k in keys) + f" | {row[keys[-1] + '_count']} |" for row in grouped]
    return f"{rejects.num_rows} input(s) rejected.\n\n" + "\n".join(lines) + "\n"


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB") if img.mode not in ("L", "I;16", "I") else img)


def _as_rgb_float(pixels: np.ndarray) -> np.ndarray:
    values = pixels.astype(np.float32)
    if values.ndim == 2:
        low, high = float(values.min()), float(values.max())
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
        return np.stack([values] * 3, axis=2)
    return values[..., :3] / 255.0


def _first_video_frame(data: bytes) -> np.ndarray | None:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            for frame in container.decode(video=0):
                return np.asarray(frame.to_ndarray(format="rgb24"))
    except Exception:  # noqa: BLE001 - an undecodable clip is simply not drawn
        return None
    return None


def _text_of(row: Mapping[str, Any]) -> str:
    if row.get("caption"):
        return str(row["caption"])
    answers = [t["value"] for t in row.get("conversations") or [] if t.get("from") == "gpt"]
    if answers:
        return str(answers[-1])
    quality = row.get("quality") or {}
    return str(quality.get("description") or "")


def _primary(images: list[dict[str, Any]]) -> dict[str, Any] | None:
    for role in PRIMARY_ROLE_ORDER:
        for image in images:
            if image.get("role") == role:
                return image
    return images[0] if images else None


def _pick_samples(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Round-robin over (dataset, modality, task) so every kind of sample is shown."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("images") or row.get("video"):
            groups[(str(row.get("dataset")), str(row.get("modality")), str(row.get("task")))].append(row)
    picked: list[dict[str, Any]] = []
    queues = [list(v) for _, v in sorted(groups.items())]
    while len(picked) < limit and any(queues):
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    return picked


def _overlay(rgb: np.ndarray, masks: list[dict[str, Any]]) -> np.ndarray:
    out = rgb.copy()
    for index, mask in enumerate(masks):
        try:
            decoded = _decode(mask["data"])
        except Exception:  # noqa: BLE001
            continue
        binary = np.asarray(decoded.any(axis=2) if decoded.ndim == 3 else decoded > 0)
        if binary.shape != out.shape[:2]:
            continue  # misaligned masks are the gate's business; do not draw them wrongly
        colour = MASK_COLOURS[index % len(MASK_COLOURS)]
        out[binary] = 0.55 * out[binary] + 0.45 * colour
    return out


def _contact_sheet(rows: list[dict[str, Any]], path: str) -> bool:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    picked = _pick_samples(rows, CONTACT_SHEET_SAMPLES)
    if not picked:
        return False
    cols = min(4, len(picked))
    grid_rows = (len(picked) + cols - 1) // cols
    fig, axes = plt.subplots(grid_rows, cols, figsize=(4 * cols, 5.0 * grid_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, picked, strict=False):
        primary = _primary(row.get("images") or [])
        pixels = None
        if primary is not None:
            try:
                pixels = _as_rgb_float(_decode(primary["data"]))
            except Exception:  # noqa: BLE001
                pixels = None
        elif row.get("video"):
            frame = _first_video_frame(row["video"]["data"])
            pixels = _as_rgb_float(frame) if frame is not None else None
        if pixels is None:
            continue
        masks = row.get("masks") or []
        ax.imshow(_overlay(pixels, masks))
        for index, mask in enumerate(masks):
            colour = MASK_COLOURS[index % len(MASK_COLOURS)]
            box = mask.get("bbox_xyxy")
            if box and len(box) == 4:
                ax.add_patch(Rectangle((box[0] - 0.5, box[1] - 0.5), box[2] - box[0], box[3] - box[1],
                                       fill=False, edgecolor=colour, linewidth=1.2))
            for click in mask.get("clicks_xy") or []:
                ax.plot(click[0], click[1], marker="+", color="yellow", markersize=8)
        labels = ", ".join(sorted({str(m.get("category")) for m in masks}))
        ax.set_title(f"{row.get('modality')} · {row.get('task')}" + (f"\n[{labels}]" if labels else ""), fontsize=9)
        caption = textwrap.fill(_text_of(row)[:160], width=48)
        ax.text(0.5, -0.02, caption, transform=ax.transAxes, ha="center", va="top", fontsize=7, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return True


def _degradation_panels(rows: list[dict[str, Any]], path: str, max_groups: int = 3) -> bool:
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("degradation") and row.get("images"):
            groups[(str(row.get("source_uri")), str(row["degradation"].get("type")))].append(row)
    chosen = sorted(groups.items())[:max_groups]
    if not chosen:
        return False
    width = 1 + max(len(v) for _, v in chosen)
    fig, axes = plt.subplots(len(chosen), width, figsize=(3.2 * width, 3.9 * len(chosen)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for line, ((_uri, kind), members) in enumerate(chosen):
        members.sort(key=lambda r: r["degradation"].get("severity") or 0)
        roles = {img.get("role"): img for img in members[0]["images"]}
        clean = roles.get("clean")
        if clean is not None:
            axes[line][0].imshow(_as_rgb_float(_decode(clean["data"])))
            axes[line][0].set_title(f"clean\n{kind}", fontsize=9)
        for column, row in enumerate(members, start=1):
            degraded = {img.get("role"): img for img in row["images"]}.get("degraded") or _primary(row["images"])
            if degraded is None:
                continue
            axes[line][column].imshow(_as_rgb_float(_decode(degraded["data"])))
            record, quality = row["degradation"], row.get("quality") or {}
            psnr = record.get("psnr_db")
            psnr_text = f"{psnr:.1f} dB" if psnr is not None else "n/a"
            axes[line][column].set_title(
                f"severity {record.get('severity')} · {psnr_text}\nverdict: {quality.get('verdict', 'n/a')}", fontsize=9
            )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def _histograms(metrics: pa.Table, path: str) -> bool:
    import matplotlib.pyplot as plt

    present = []
    for column in HISTOGRAM_METRICS:
        if column in metrics.schema.names:
            values = pc.drop_null(metrics.column(column)).to_numpy(zero_copy_only=False).astype(float)
            values = values[np.isfinite(values)]
            if values.size:
                present.append((column, values))
    if not present:
        return False
    cols = min(4, len(present))
    grid_rows = (len(present) + cols - 1) // cols
    fig, axes = plt.subplots(grid_rows, cols, figsize=(3.6 * cols, 2.8 * grid_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (column, values) in zip(axes.flat, present, strict=False):
        ax.axis("on")
        ax.hist(values, bins=min(30, max(5, values.size)), color="#3b6ea5")
        ax.set_title(column, fontsize=9)
        ax.set_xlabel(HISTOGRAM_METRICS[column], fontsize=7)
        ax.set_ylabel("samples", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def _summary_markdown(summary: Mapping[str, Any] | None) -> str:
    if not summary:
        return ""
    lines = ["| key | value |", "|---|---|"]
    for key, value in summary.items():
        text = str(value).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {key} | {text[:300]} |")
    return "## Build summary\n\n" + "\n".join(lines) + "\n\n"


def _links_markdown(summary: Mapping[str, Any] | None, out_dir: str) -> str:
    links = []
    for key, value in (summary or {}).items():
        if isinstance(value, str) and (key.endswith(("_path", "_uri", "_url")) or key == "data_docs"):
            target = os.path.relpath(value, out_dir) if os.path.isabs(value) else value
            links.append(f"- {key}: [{value}]({target})")
    return "## Links\n\n" + ("\n".join(links) if links else "_none recorded_") + "\n"


def write_dataset_card(
    table_or_shards: pa.Table | Sequence[str],
    out_dir: str,
    *,
    name: str,
    version: str,
    rejects: pa.Table | None = None,
    summary: dict[str, Any] | None = None,
    metrics: pa.Table | str | None = None,
) -> str:
    """Write the card for one published version into ``out_dir``; return README.md's path.

    ``metrics`` is the gate's metrics table or its ``metrics_path`` (histograms over every
    row); without it the histograms use metrics of the rows sampled for the pictures.
    ``summary`` (the run summary, the gate report's headline numbers, links such as
    ``data_docs_path``) is tabulated and its ``*_path``/``*_uri`` values linked.
    """
    import matplotlib

    matplotlib.use("Agg")
    import markdown

    os.makedirs(out_dir, exist_ok=True)
    light, full = _load(table_or_shards)
    rows = full.to_pylist()
    if isinstance(metrics, str):
        metrics = _read(metrics)
    if metrics is None:
        metrics = MetricsStage().compute(full)

    figures = {
        "contact_sheet.png": _contact_sheet(rows, os.path.join(out_dir, "contact_sheet.png")),
        "degradation_panels.png": _degradation_panels(rows, os.path.join(out_dir, "degradation_panels.png")),
        "metric_histograms.png": _histograms(metrics, os.path.join(out_dir, "metric_histograms.png")),
    }
    subjects = len(pc.unique(pc.drop_null(light.column("subject_key")))) if "subject_key" in light.schema.names else 0
    datasets = sorted({str(v) for v in pc.unique(light.column("dataset")).to_pylist()}) if "dataset" in light.schema.names else []

    def figure(title: str, file: str, absent: str) -> str:
        return f"## {title}\n\n" + (f"![{title}]({file})\n" if figures[file] else f"_{absent}_\n")

    parts = [
        f"# Dataset card: {name} {version}\n",
        f"{light.num_rows} samples from {subjects} subjects; dataset(s): {', '.join(datasets) or 'n/a'}.\n",
        _summary_markdown(summary),
    ]
    for column in COUNT_COLUMNS:
        parts.append(f"## Counts by {column}\n\n{_counts_markdown(light, column)}")
    parts.append(f"## Rejects by reason\n\n{_rejects_markdown(rejects)}")
    parts.append(figure("Contact sheet", "contact_sheet.png", "no sample has an image or video"))
    parts.append(figure("Degradation panels", "degradation_panels.png", "no degraded samples in this version"))
    parts.append(figure("Metric histograms", "metric_histograms.png", "no metrics to draw"))
    parts.append(_links_markdown(summary, out_dir))
    text = "\n".join(parts)

    readme = os.path.join(out_dir, "README.md")
    with open(readme, "w", encoding="utf-8") as handle:
        handle.write(text)
    body = markdown.markdown(text, extensions=["tables"])
    html = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Dataset card: {name} {version}</title><style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}img{max-width:100%}</style>"
        f"</head><body>{body}</body></html>"
    )
    with open(os.path.join(out_dir, "card.html"), "w", encoding="utf-8") as handle:
        handle.write(html)
    return readme
