"""The dataset card: what a person looks at before training on a published version.

``write_dataset_card`` writes ``README.md`` (counts by modality/task/split/source,
rejects by reason, gate summary, links), ``card.html`` (the same Markdown rendered
with the ``markdown`` package) and PNGs: a contact sheet of sample images with their
masks drawn and captions, degradation panels (clean vs each severity), and histograms
of the key metrics. Figures are drawn with Pillow (no display, no plotting library).
"""

from __future__ import annotations

import functools
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

from converters.io import read_each
from curation.shards import read_present_columns
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
#: rows the pictures are picked from: enough for 12 contact-sheet samples round-robin over
#: kinds and 3 degradation parents with their severities; they are read without their
#: image, mask and clip bytes, and only the picked rows are then read whole
SAMPLE_ROWS_PER_CARD = 64
#: columns whose ``data`` leaves are the heavy bytes left out of the rows picking reads
HEAVY_COLUMNS = ("images", "masks", "video")
#: the key under which a candidate row carries its place: (shard index, row in shard)
POSITION = "_position"
MASK_COLOURS = np.array(
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230]],
    dtype=np.float32,
) / 255.0


LIGHT_COLUMNS: tuple[str, ...] = (*COUNT_COLUMNS, "dataset", "subject_key")


def _read_metrics(path: str, table_or_shards: pa.Table | Sequence[str]) -> tuple[pa.Table, pa.Table | None]:
    """(histogram columns, light columns of every row or None) from the gate's
    ``quality_metrics.parquet``, restricted to the version's shards.

    The gate wrote one row per row of every shard it measured or reused, with the
    shard's name, so when the file covers every published shard it answers the counts
    in one read, not one footer per shard (100 CT shards: ~0.2 s -> ~5 ms). Otherwise
    (a file without those columns, or shards it does not cover) the light columns are
    read from the shards and the histograms use every row of the file.
    """
    table = read_present_columns(path, [*HISTOGRAM_METRICS, *LIGHT_COLUMNS, "shard"])
    names = set(table.schema.names)
    if isinstance(table_or_shards, pa.Table) or not table_or_shards or not {"shard", *LIGHT_COLUMNS} <= names:
        return table, None
    wanted = sorted({os.path.basename(path.rstrip("/")) for path in table_or_shards})
    if not set(wanted) <= set(pc.unique(table.column("shard")).to_pylist()):
        return table, None
    rows = table.filter(pc.is_in(table.column("shard"), value_set=pa.array(wanted)))
    return rows, rows.select(list(LIGHT_COLUMNS))


def _load(
    table_or_shards: pa.Table | Sequence[str], light: pa.Table | None = None
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """(table of light columns of every row, candidate rows to pick the pictures from).

    Candidates are the first ``SAMPLE_ROWS_PER_CARD`` rows, read without the bytes of
    their images, masks and clips (a CT row is ~0.8 MB with its raw copy, of which
    picking needs a few fields), each with its place under ``POSITION`` for
    :func:`_full_rows`. Counts need every row: ``light`` when the gate's metrics gave
    them, else the light columns of every shard.
    """
    if isinstance(table_or_shards, pa.Table):
        columns = [c for c in LIGHT_COLUMNS if c in table_or_shards.schema.names]
        head = table_or_shards.slice(0, SAMPLE_ROWS_PER_CARD).to_pylist()
        return table_or_shards.select(columns), [{**row, POSITION: (0, i)} for i, row in enumerate(head)]
    if not table_or_shards:
        raise ValueError("write_dataset_card needs a table or at least one shard path")
    light_parts = (
        [light] if light is not None
        else read_each(functools.partial(read_present_columns, columns=LIGHT_COLUMNS), list(table_or_shards))
    )
    candidates: list[dict[str, Any]] = []
    for index, path in enumerate(table_or_shards):
        wanted = SAMPLE_ROWS_PER_CARD - len(candidates)
        if wanted <= 0:
            break
        fs, inner = fsspec.core.url_to_fs(path)
        with fs.open(inner, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            batch = next(parquet.iter_batches(batch_size=wanted, columns=_metadata_paths(parquet)), None)
        rows = batch.to_pylist() if batch is not None else []
        candidates += [{**row, POSITION: (index, i)} for i, row in enumerate(rows)]
    return pa.concat_tables(light_parts, promote_options="default"), candidates


def _metadata_paths(parquet: pq.ParquetFile) -> list[str]:
    """Every leaf column of the shard but the ``data`` bytes under ``HEAVY_COLUMNS``."""
    paths = [parquet.schema.column(i).path for i in range(len(parquet.schema))]
    return [p for p in paths if not (p.split(".", 1)[0] in HEAVY_COLUMNS and p.rsplit(".", 1)[-1] == "data")]


def _full_rows(table_or_shards: pa.Table | Sequence[str], positions: set[tuple[int, int]]) -> pa.Table | None:
    """The whole rows at ``positions``, in ``sorted(positions)`` order, reading only the
    row groups that hold them."""
    if not positions:
        return None
    if isinstance(table_or_shards, pa.Table):
        return table_or_shards.take(sorted(row for _, row in positions))
    parts = []
    for index in sorted({shard for shard, _ in positions}):
        rows = sorted(row for shard, row in positions if shard == index)
        fs, inner = fsspec.core.url_to_fs(table_or_shards[index])
        with fs.open(inner, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
            first_row = np.cumsum([0, *sizes])
            group_of = {row: int(np.searchsorted(first_row, row, side="right")) - 1 for row in rows}
            groups = sorted(set(group_of.values()))
            table = parquet.read_row_groups(groups)
        read_from = dict(zip(groups, np.cumsum([0, *(sizes[g] for g in groups)]), strict=False))  # group -> first row read
        parts.append(table.take([int(read_from[group_of[row]] + row - first_row[group_of[row]]) for row in rows]))
    return pa.concat_tables(parts, promote_options="default")


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


# -- drawing with Pillow --------------------------------------------------------------
# The figures are grids of pictures with a few words and, for the histograms, bars:
# Pillow draws them in milliseconds where matplotlib's figure machinery (layout, Agg
# rendering of every artist) took ~1 s per card.

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GREY = (110, 110, 110)
BAR_COLOUR = (59, 110, 165)
CLICK_COLOUR = (255, 255, 0)
#: zlib level of the card's PNGs: level 6 (Pillow's default) spent 2-3x longer on noisy
#: pictures for files ~10 % smaller
PNG_COMPRESS_LEVEL = 3


@functools.lru_cache(maxsize=8)
def _font(size: int) -> Any:
    """Pillow's bundled scalable font (FreeType); its bitmap font where FreeType is missing."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError, ImportError):
        return ImageFont.load_default()


def _rgb8(pixels: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] (``_as_rgb_float``) to 8-bit RGB."""
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def _fitted(pixels: np.ndarray, width: int, height: int) -> tuple[Any, float]:
    """The picture scaled to fit ``width`` x ``height`` (aspect kept) and its scale factor."""
    from PIL import Image

    picture = Image.fromarray(_rgb8(pixels))
    scale = min(width / picture.width, height / picture.height)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR
    return picture.resize(size, resample), scale


def _centred_lines(draw: Any, lines: Sequence[str], centre_x: float, top: float, font: Any, fill: tuple[int, int, int]) -> None:
    line_height = font.size + 2 if hasattr(font, "size") else 12
    for index, line in enumerate(lines):
        draw.text((centre_x, top + index * line_height), line, font=font, fill=fill, anchor="ma")


def _paste_centred(sheet: Any, picture: Any, left: int, top: int, width: int, height: int) -> tuple[int, int]:
    """Paste ``picture`` centred in the box; return its top-left corner on ``sheet``."""
    x = left + (width - picture.width) // 2
    y = top + (height - picture.height) // 2
    sheet.paste(picture, (x, y))
    return x, y


def _draw_prompts(draw: Any, masks: list[dict[str, Any]], origin: tuple[int, int], scale: float) -> None:
    """Each mask's box (``bbox_xyxy``, exclusive x1/y1) in its colour, and its clicks as
    yellow crosses, in the coordinates of the scaled picture at ``origin``."""
    x0, y0 = origin
    for index, mask in enumerate(masks):
        colour = tuple(int(c * 255) for c in MASK_COLOURS[index % len(MASK_COLOURS)])
        box = mask.get("bbox_xyxy")
        if box and len(box) == 4:
            draw.rectangle(
                [x0 + box[0] * scale, y0 + box[1] * scale, x0 + box[2] * scale - 1, y0 + box[3] * scale - 1],
                outline=colour, width=2,
            )
        for click in mask.get("clicks_xy") or []:
            cx, cy = x0 + (click[0] + 0.5) * scale, y0 + (click[1] + 0.5) * scale
            draw.line([(cx - 5, cy), (cx + 5, cy)], fill=CLICK_COLOUR, width=1)
            draw.line([(cx, cy - 5), (cx, cy + 5)], fill=CLICK_COLOUR, width=1)


def _sample_pixels(row: Mapping[str, Any]) -> np.ndarray | None:
    """Float RGB of a sample's primary image, or of its clip's first frame."""
    primary = _primary(row.get("images") or [])
    if primary is not None:
        try:
            return _as_rgb_float(_decode(primary["data"]))
        except Exception:  # noqa: BLE001 - an undecodable image is simply not drawn
            return None
    if row.get("video"):
        frame = _first_video_frame(row["video"]["data"])
        return _as_rgb_float(frame) if frame is not None else None
    return None


def _contact_sheet(picked: list[dict[str, Any]], path: str) -> bool:
    """The picked samples (:func:`_pick_samples`): picture with masks overlaid, boxes and
    clicks, the modality and task with the mask categories above, the caption (or last
    answer) below."""
    from PIL import Image, ImageDraw

    if not picked:
        return False
    cols = min(4, len(picked))
    grid_rows = (len(picked) + cols - 1) // cols
    cell_w, image_side, title_h, caption_h = 288, 264, 34, 52
    cell_h = title_h + image_side + caption_h + 10
    sheet = Image.new("RGB", (cols * cell_w, grid_rows * cell_h), WHITE)
    draw = ImageDraw.Draw(sheet)
    title_font, caption_font = _font(12), _font(10)
    for slot, row in enumerate(picked):
        left, top = (slot % cols) * cell_w, (slot // cols) * cell_h
        pixels = _sample_pixels(row)
        if pixels is None:
            continue
        masks = row.get("masks") or []
        picture, scale = _fitted(_overlay(pixels, masks), image_side, image_side)
        origin = _paste_centred(sheet, picture, left + (cell_w - image_side) // 2, top + title_h, image_side, image_side)
        _draw_prompts(draw, masks, origin, scale)
        labels = ", ".join(sorted({str(m.get("category")) for m in masks}))
        title = [f"{row.get('modality')} · {row.get('task')}", *([f"[{labels}]"] if labels else [])]
        _centred_lines(draw, title, left + cell_w / 2, top + 4, title_font, BLACK)
        caption = textwrap.wrap(_text_of(row)[:160], width=48)[:4]
        _centred_lines(draw, caption, left + cell_w / 2, top + title_h + image_side + 4, caption_font, BLACK)
    sheet.save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return True


def _degradation_groups(
    rows: list[dict[str, Any]], max_groups: int = 3
) -> list[tuple[tuple[str, str], list[dict[str, Any]]]]:
    """The first ``max_groups`` degraded parents (same source and degradation type), each
    with its degraded rows."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("degradation") and row.get("images"):
            groups[(str(row.get("source_uri")), str(row["degradation"].get("type")))].append(row)
    return sorted(groups.items())[:max_groups]


def _degradation_panels(chosen: list[tuple[tuple[str, str], list[dict[str, Any]]]], path: str) -> bool:
    """Per degraded parent (:func:`_degradation_groups`): the clean image, then each
    degraded version by severity with its declared PSNR and quality verdict."""
    from PIL import Image, ImageDraw

    if not chosen:
        return False
    width = 1 + max(len(v) for _, v in chosen)
    cell_w, image_side, title_h = 256, 240, 34
    cell_h = title_h + image_side + 12
    sheet = Image.new("RGB", (width * cell_w, len(chosen) * cell_h), WHITE)
    draw = ImageDraw.Draw(sheet)
    font = _font(12)

    def panel(line: int, column: int, data: bytes, title: list[str]) -> None:
        left, top = column * cell_w, line * cell_h
        try:
            picture, _ = _fitted(_as_rgb_float(_decode(data)), image_side, image_side)
        except Exception:  # noqa: BLE001 - an undecodable image is simply not drawn
            return
        _paste_centred(sheet, picture, left + (cell_w - image_side) // 2, top + title_h, image_side, image_side)
        _centred_lines(draw, title, left + cell_w / 2, top + 4, font, BLACK)

    for line, ((_uri, kind), members) in enumerate(chosen):
        members.sort(key=lambda r: r["degradation"].get("severity") or 0)
        clean = {img.get("role"): img for img in members[0]["images"]}.get("clean")
        if clean is not None:
            panel(line, 0, clean["data"], ["clean", kind])
        for column, row in enumerate(members, start=1):
            degraded = {img.get("role"): img for img in row["images"]}.get("degraded") or _primary(row["images"])
            if degraded is None:
                continue
            record, quality = row["degradation"], row.get("quality") or {}
            psnr = record.get("psnr_db")
            psnr_text = f"{psnr:.1f} dB" if psnr is not None else "n/a"
            panel(line, column, degraded["data"],
                  [f"severity {record.get('severity')} · {psnr_text}", f"verdict: {quality.get('verdict', 'n/a')}"])
    sheet.save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return True


def _tick(value: float) -> str:
    """An axis label: whole numbers from 100 up, three significant digits below."""
    if value == 0:
        return "0"
    if abs(value) >= 1e6 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _histogram_panel(draw: Any, sheet: Any, box: tuple[int, int, int, int], column: str, values: np.ndarray) -> None:
    """One histogram in ``box`` (left, top, right, bottom): title, bars, the count axis
    (0, half, max) and the value axis (min, middle, max) with its label."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = box
    small, title_font = _font(9), _font(11)
    counts, edges = np.histogram(values, bins=min(30, max(5, values.size)))
    plot_left, plot_top, plot_right, plot_bottom = left + 44, top + 22, right - 12, bottom - 40
    draw.text(((left + right) / 2, top + 4), column, font=title_font, fill=BLACK, anchor="ma")
    draw.rectangle([plot_left, plot_top, plot_right, plot_bottom], outline=BLACK, width=1)
    peak = max(1, int(counts.max()))
    span = float(edges[-1] - edges[0]) or 1.0
    plot_w, plot_h = plot_right - plot_left, plot_bottom - plot_top
    for count, low, high in zip(counts.tolist(), edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        if count:
            x0 = plot_left + (low - edges[0]) / span * plot_w
            x1 = plot_left + (high - edges[0]) / span * plot_w
            draw.rectangle([x0, plot_bottom - count / peak * (plot_h - 4), max(x0, x1 - 1), plot_bottom], fill=BAR_COLOUR)
    for count in sorted({0, round(peak / 2), peak}):
        y = plot_bottom - count / peak * (plot_h - 4)
        draw.line([(plot_left - 4, y), (plot_left, y)], fill=BLACK)
        draw.text((plot_left - 6, y), str(count), font=small, fill=BLACK, anchor="rm")
    for fraction in (0.0, 0.5, 1.0):
        x = plot_left + fraction * plot_w
        draw.line([(x, plot_bottom), (x, plot_bottom + 4)], fill=BLACK)
        draw.text((x, plot_bottom + 6), _tick(float(edges[0]) + fraction * span), font=small, fill=BLACK, anchor="ma")
    draw.text(((plot_left + plot_right) / 2, plot_bottom + 22), HISTOGRAM_METRICS[column], font=small, fill=GREY, anchor="ma")
    label = Image.new("RGB", (60, 12), WHITE)
    ImageDraw.Draw(label).text((30, 6), "samples", font=small, fill=GREY, anchor="mm")
    rotated = label.rotate(90, expand=True)
    sheet.paste(rotated, (left + 2, (plot_top + plot_bottom) // 2 - rotated.height // 2))


def _histograms(metrics: pa.Table, path: str) -> bool:
    """A histogram of each key metric present (``HISTOGRAM_METRICS``), over every row."""
    from PIL import Image, ImageDraw

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
    cell_w, cell_h = 288, 224
    sheet = Image.new("RGB", (cols * cell_w, grid_rows * cell_h), WHITE)
    draw = ImageDraw.Draw(sheet)
    for slot, (column, values) in enumerate(present):
        left, top = (slot % cols) * cell_w, (slot // cols) * cell_h
        _histogram_panel(draw, sheet, (left, top, left + cell_w, top + cell_h), column, values)
    sheet.save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
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
    import markdown

    os.makedirs(out_dir, exist_ok=True)
    gate_light = None
    if isinstance(metrics, str):
        metrics, gate_light = _read_metrics(metrics, table_or_shards)
    light, candidates = _load(table_or_shards, gate_light)
    # pick from rows without their bytes, then read whole only the rows that are drawn
    picked = _pick_samples(candidates, CONTACT_SHEET_SAMPLES)
    degraded = _degradation_groups(candidates)
    drawn = {row[POSITION] for row in picked} | {row[POSITION] for _, members in degraded for row in members}
    full = _full_rows(table_or_shards, drawn)
    whole = dict(zip(sorted(drawn), full.to_pylist() if full is not None else [], strict=True))
    if metrics is None:
        metrics = MetricsStage().compute(full) if full is not None else pa.table({})

    figures = {
        "contact_sheet.png": _contact_sheet(
            [whole[row[POSITION]] for row in picked], os.path.join(out_dir, "contact_sheet.png")
        ),
        "degradation_panels.png": _degradation_panels(
            [(key, [whole[row[POSITION]] for row in members]) for key, members in degraded],
            os.path.join(out_dir, "degradation_panels.png"),
        ),
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
