"""Rasters keep their pixels and orientation; volumes slice along the acquisition axis;
bad input of every kind becomes a reject with a reason while the run goes on."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import SimpleITK as sitk
from PIL import Image

from converters.base import ConvertOptions
from converters.discover import discover
from converters.stage import ConvertStage
from curation.images import decode_png
from curation.stages import run_stages_locally
from flows.build import BuildRequest, run_build_inline
from tests.helpers import CT_DIR, TEST_SALT, XRAY_DIR


def convert(source: Path, **options):
    found = discover([str(source)])
    out = run_stages_locally(
        [ConvertStage(ConvertOptions(dataset="t", source="t", salt=TEST_SALT, **options))], found.table()
    )
    return out.table, found.rejects + out.rejects


def test_chest_radiographs_keep_pixels_and_orientation(tmp_path):
    src = tmp_path / "xr"
    shutil.copytree(XRAY_DIR, src)
    table, rejects = convert(src, modality="XR", subject_pattern=r"(\d{8})_\d{3}")
    assert rejects == []
    rows = {r["source_uri"]: r for r in table.to_pylist()}
    for path in sorted(XRAY_DIR.glob("*.png")):
        with Image.open(path) as img:
            expected = np.asarray(img.convert("L")) if img.mode != "L" else np.asarray(img)
        row = rows[path.name]
        got = decode_png(row["images"][0]["data"])
        np.testing.assert_array_equal(got, expected)  # same pixels, same orientation
        assert row["modality"] == "XR"
        assert row["images"][0]["width"] == expected.shape[1]
    # the subject pattern groups follow-ups of a patient: different patients here
    assert len({r["subject_key"] for r in rows.values()}) == 2


def test_sixteen_bit_raster_keeps_a_lossless_raw_copy(tmp_path):
    values = (np.arange(64 * 80, dtype=np.uint32).reshape(64, 80) * 13 % 60000).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    table, _ = convert(tmp_path)
    images = {i["role"]: i for i in table.to_pylist()[0]["images"]}
    np.testing.assert_array_equal(decode_png(images["raw"]["data"]), values)
    assert images["raw"]["bit_depth"] == 16 and images["input"]["bit_depth"] == 8


def test_sixteen_bit_colour_rasters_say_they_were_reduced_to_eight_bits(tmp_path):
    """Pillow reads 16-bit RGB PNGs and TIFFs as 8-bit (the high byte): the pixels are that
    linear rendering, and the row's provenance says so instead of "as stored"."""
    import json

    import tifffile

    colour = (np.arange(24 * 20 * 3, dtype=np.uint32).reshape(24, 20, 3) * 181 % 65536).astype(np.uint16)
    sitk.WriteImage(sitk.GetImageFromArray(colour, isVector=True), str(tmp_path / "deep_rgb.png"))
    tifffile.imwrite(tmp_path / "deep_rgb.tif", colour, photometric="rgb")
    Image.fromarray((colour >> 8).astype(np.uint8)).save(tmp_path / "plain_rgb.png")
    table, rejects = convert(tmp_path)
    assert rejects == []
    rows = {r["source_uri"]: r for r in table.to_pylist()}
    assert set(rows) == {"deep_rgb.png", "deep_rgb.tif", "plain_rgb.png"}
    for name, row in rows.items():
        np.testing.assert_array_equal(decode_png(row["images"][0]["data"]), colour >> 8)
        steps = {s["step"]: s for s in json.loads(row["provenance"]["steps_json"])}
        pixels = steps["raster.pixels"]["params"]
        if name.startswith("deep"):
            assert pixels == {"kept": "8-bit, the high byte of each sample", "reduced_from_bits": 16}
        else:
            assert pixels == {"kept": "8-bit as stored"}


def test_palette_and_rgba_rasters_become_rgb(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :10] = (255, 0, 0)
    rgb[:, 10:20] = (0, 255, 0)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "pal.png")
    rgba = np.dstack([rgb, np.full((20, 30), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    table, _ = convert(tmp_path)
    for row in table.to_pylist():
        np.testing.assert_array_equal(decode_png(row["images"][0]["data"]), rgb)


def asymmetric_phantom() -> np.ndarray:
    """[z, y, x] volume with a marker whose position identifies every axis."""
    volume = np.zeros((6, 40, 50), np.int16)
    volume[1, 5:10, 30:45] = 1000  # inferior slice, anterior rows, patient-left columns
    return volume


def test_volume_slices_follow_the_acquisition_axis_with_labels_aligned(tmp_path):
    src = tmp_path / "vol"
    src.mkdir()
    volume = asymmetric_phantom()
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((0.7, 0.8, 2.5))
    sitk.WriteImage(image, str(src / "case1.nii.gz"))
    label = sitk.GetImageFromArray((volume > 0).astype(np.uint8))
    label.CopyInformation(image)
    sitk.WriteImage(label, str(src / "case1_tumour_seg.nii.gz"))
    table, rejects = convert(src, modality="MR")
    assert rejects == []
    rows = {int(r["source_uri"].rsplit("=", 1)[1]): r for r in table.to_pylist()}
    assert sorted(rows) == list(range(6))
    assert rows[0]["images"][0]["spacing_mm"] == [0.800000011920929, 0.699999988079071, 2.5]
    masked = [k for k, r in rows.items() if r["masks"]]
    assert masked == [1]
    mask = decode_png(rows[1]["masks"][0]["data"])
    assert rows[1]["masks"][0]["category"] == "tumour"
    # the mask sits exactly on the bright marker of the windowed image
    pixels = decode_png(rows[1]["images"][0]["data"])
    assert pixels[mask].min() > pixels[~mask].max()
    assert rows[1]["masks"][0]["bbox_xyxy"] == [30, 5, 45, 10]


def test_label_map_on_another_grid_is_resampled_nearest_neighbour(ct_series):
    # replace the liver map with a copy at half resolution on the same physical extent
    liver = sitk.ReadImage(str(CT_DIR / "liver_seg.nrrd"))
    coarse = sitk.Resample(
        liver,
        [256, 256, 3],
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        liver.GetOrigin(),
        [s * f for s, f in zip(liver.GetSpacing(), (2, 2, 1), strict=True)],
        liver.GetDirection(),
        0,
        liver.GetPixelID(),
    )
    (ct_series / "liver_seg.nrrd").unlink()
    sitk.WriteImage(coarse, str(ct_series / "liver_seg.nrrd"))
    table, _ = convert(ct_series)
    for row in table.to_pylist():
        for mask in row["masks"] or []:
            assert decode_png(mask["data"]).shape == (512, 512)
    livers = [m for r in table.to_pylist() for m in r["masks"] or [] if m["category"] == "liver"]
    assert livers, "the resampled liver must still produce masks"


def test_bad_inputs_are_rejected_with_reasons_and_counts_add_up(tmp_path, workdir):
    src = tmp_path / "mixed"
    shutil.copytree(XRAY_DIR, src / "good")
    bad = src / "bad"
    bad.mkdir()
    (bad / "random.dcm").write_bytes(np.random.default_rng(0).bytes(4000))
    (bad / "truncated.dcm").write_bytes((CT_DIR / "01.dcm").read_bytes()[:1000])
    (bad / "empty.png").write_bytes(b"")
    (bad / "broken.nrrd").write_bytes(b"NRRD0004\ntype: nonsense\ndimension: 3\nsizes: 4 4\n\n")
    (bad / "notes.docx").write_bytes(b"PK\x03\x04 not an image")
    outcome = run_build_inline(
        BuildRequest(recipe="convert", sources=[str(src)], dataset="mixed", workdir=str(workdir))
    )
    summary = outcome.summary
    assert summary["inputs_total"] == 7
    assert summary["inputs_converted"] == 2 and summary["inputs_rejected"] == 5
    assert summary["inputs_converted"] + summary["inputs_rejected"] == summary["inputs_total"]
    assert summary["samples_written"] == 2
    rejects = pq.read_table(workdir / "runs" / outcome.run_id / "rejects.parquet").to_pylist()
    reasons = {r["source_uri"]: r["reason"] for r in rejects}
    assert reasons == {
        "bad/random.dcm": "not_dicom",
        "bad/truncated.dcm": "truncated",
        "bad/empty.png": "empty_file",
        "bad/broken.nrrd": "bad_header",
        "bad/notes.docx": "unsupported_format",
    }
    assert all(r["detail"] and r["source_uri"].split("/")[-1] in r["detail"] for r in rejects)
    assert summary["rejects_by_reason"] == {
        "bad_header": 1, "empty_file": 1, "not_dicom": 1, "truncated": 1, "unsupported_format": 1,
    }


def test_a_truncated_nifti_is_a_reject_not_slices_of_zeros(tmp_path):
    """ITK fills a cut-off NIfTI with zeros without a word; the converter checks the data
    against the header (plain file size, gzip stream end) and rejects it."""
    import gzip

    import nibabel as nib

    from converters.base import ConversionError
    from converters.volume import read_volume

    ramp = np.arange(16 * 16 * 8, dtype=np.int16).reshape(16, 16, 8)
    nib.save(nib.Nifti1Image(ramp, np.eye(4)), tmp_path / "whole.nii")
    nib.save(nib.Nifti1Image(ramp, np.eye(4)), tmp_path / "whole.nii.gz")
    whole = (tmp_path / "whole.nii").read_bytes()
    packed = (tmp_path / "whole.nii.gz").read_bytes()
    (tmp_path / "cut.nii").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "cut.nii.gz").write_bytes(packed[: len(packed) // 2])
    (tmp_path / "padded.nii.gz").write_bytes(gzip.compress(whole + b"\0" * 16))  # complete, extra bytes after the data
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 0), np.int16), np.eye(4)), tmp_path / "empty_axis.nii")
    for name in ("whole.nii", "whole.nii.gz", "padded.nii.gz"):
        assert np.array_equal(sitk.GetArrayFromImage(read_volume(str(tmp_path / name))), ramp.transpose(2, 1, 0)), name
    for name, reason in (("cut.nii", "truncated"), ("cut.nii.gz", "truncated"), ("empty_axis.nii", "bad_header")):
        try:
            read_volume(str(tmp_path / name))
        except ConversionError as exc:
            assert exc.reason == reason and name in exc.detail, (name, exc)
        else:
            raise AssertionError(f"{name} was read")
