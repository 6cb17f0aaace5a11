"""Dataset layouts: MSD / nnU-Net dataset.json, IMIS-Bench sparse masks, ImageFolder
classes, 2D mask images, and archives read in place without path traversal."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse
import SimpleITK as sitk
from PIL import Image

from converters.base import ConvertOptions
from converters.discover import discover
from converters.stage import ConvertStage
from curation.images import decode_png
from curation.schema import validate_batch
from curation.stages import run_stages_locally
from tests.helpers import CT_DIR, TEST_SALT


def convert(src: Path, **options):
    found = discover([str(src)])
    out = run_stages_locally([ConvertStage(ConvertOptions(dataset="t", source="t", salt=TEST_SALT, **options))], found.table())
    if out.table.num_rows:
        validate_batch(out.table)
    return found, out.table.to_pylist(), found.rejects + out.rejects


def write_volume(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def test_msd_dataset_json_names_labels_and_modality(tmp_path):
    root = tmp_path / "Task03_Liver"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({
        "name": "Liver", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "cancer"},
        "training": [{"image": "./imagesTr/liver_0.nii.gz", "label": "./labelsTr/liver_0.nii.gz"}],
    }))
    ct = np.full((3, 8, 10), -100, np.int16)
    label = np.zeros((3, 8, 10), np.uint8)
    label[1, 2:5, 3:7] = 1
    label[1, 6, 8] = 2
    write_volume(root / "imagesTr" / "liver_0.nii.gz", ct)
    write_volume(root / "labelsTr" / "liver_0.nii.gz", label)
    found, rows, rejects = convert(root)
    assert rejects == [] and len(found.items) == 1
    assert {r["modality"] for r in rows} == {"CT"}
    middle = next(r for r in rows if r["masks"])
    assert sorted(m["category"] for m in middle["masks"]) == ["cancer", "liver"]
    liver = next(m for m in middle["masks"] if m["category"] == "liver")
    assert liver["area_px"] == 12


def test_nnunet_multichannel_cases_share_label_map_subject_and_names(tmp_path):
    root = tmp_path / "Dataset001_BrainTumour"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "FLAIR", "1": "T1w"}, "labels": {"background": 0, "edema": 1, "tumor": 2},
        "numTraining": 1, "file_ending": ".nii.gz",
    }))
    for channel, value in ((0, 50), (1, 90)):
        write_volume(root / "imagesTr" / f"BRATS_001_{channel:04d}.nii.gz", np.full((2, 6, 6), value, np.int16))
    label = np.zeros((2, 6, 6), np.uint8)
    label[0, 1:3, 1:3] = 1
    write_volume(root / "labelsTr" / "BRATS_001.nii.gz", label)
    found, rows, rejects = convert(root)
    assert rejects == [] and len(found.items) == 2
    assert all(len(i["label_uris"]) == 1 for i in found.items)
    assert {r["modality"] for r in rows} == {"MR"}
    assert len({r["subject_key"] for r in rows}) == 1  # both channels are one subject
    labelled = [r for r in rows if r["masks"]]
    assert len(labelled) == 2 and all(r["masks"][0]["category"] == "edema" for r in labelled)
    captions = sorted(r["caption"] for r in labelled)
    assert "(FLAIR)" in captions[0] and "(T1w)" in captions[1]


def test_msd_4d_nifti_is_split_into_channels(tmp_path):
    root = tmp_path / "Task01"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "FLAIR", "1": "T1w"}, "labels": {"0": "background"}}))
    four_d = np.stack([np.full((2, 4, 5), 10 * (c + 1), np.int16) for c in range(2)])  # [c, z, y, x]
    image = sitk.JoinSeries([sitk.GetImageFromArray(v) for v in four_d])
    sitk.WriteImage(image, str(root / "imagesTr" / "BRATS_002.nii.gz"))
    _, rows, rejects = convert(root)
    assert rejects == []
    keys = sorted(r["source_uri"] for r in rows)
    assert keys == [f"imagesTr/BRATS_002.nii.gz#channel={c}#slice={s}" for c in ("FLAIR", "T1w") for s in (0, 1)]


def test_imis_sparse_masks_become_per_class_masks(tmp_path):
    src = tmp_path / "imis"
    src.mkdir()
    height, width = 12, 16
    Image.fromarray(np.full((height, width), 120, np.uint8)).save(src / "ct_0001.png")
    classes = np.zeros((3, height, width), bool)
    classes[0, 1:4, 2:6] = True
    classes[2, 8:11, 10:15] = True
    scipy.sparse.save_npz(src / "ct_0001.npz", scipy.sparse.csr_matrix(classes.reshape(3, -1)))
    _, rows, rejects = convert(src, label_names=((0, "liver"), (2, "spleen")))
    assert rejects == []
    (row,) = rows
    by_name = {m["category"]: m for m in row["masks"]}
    assert set(by_name) == {"liver", "spleen"}
    np.testing.assert_array_equal(decode_png(by_name["spleen"]["data"]), classes[2])
    assert by_name["liver"]["bbox_xyxy"] == [2, 1, 6, 4]


def test_sparse_masks_of_another_size_are_rejected(tmp_path):
    src = tmp_path / "imis"
    src.mkdir()
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(src / "x.png")
    scipy.sparse.save_npz(src / "x.npz", scipy.sparse.csr_matrix(np.ones((2, 100), bool)))
    _, rows, rejects = convert(src)
    assert rows == [] and [r.reason for r in rejects] == ["mask_size_mismatch"]


def test_image_folder_classes_become_labels(tmp_path):
    for cls in ("glaucoma", "normal"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for index in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * index, np.uint8)).save(tmp_path / "train" / cls / f"{cls}{index}.jpg")
    _, rows, rejects = convert(tmp_path, modality="CFP")
    assert rejects == [] and len(rows) == 4
    assert {r["source_uri"]: r["labels"] for r in rows} == {
        "train/glaucoma/glaucoma0.jpg": ["glaucoma"], "train/glaucoma/glaucoma1.jpg": ["glaucoma"],
        "train/normal/normal0.jpg": ["normal"], "train/normal/normal1.jpg": ["normal"],
    }


def test_mask_images_pair_by_folder_and_by_suffix(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((10, 12), 90, np.uint8)).save(tmp_path / "images" / "polyp1.png")
    binary = np.zeros((10, 12), np.uint8)
    binary[2:6, 3:9] = 255
    Image.fromarray(binary).save(tmp_path / "masks" / "polyp1.png")
    # indexed palette mask beside its image: values 1 and 2
    Image.fromarray(np.full((10, 12, 3), 60, np.uint8)).save(tmp_path / "fundus.png")
    indexed = np.zeros((10, 12), np.uint8)
    indexed[0:3, 0:3], indexed[7:10, 8:12] = 1, 2
    palette = Image.fromarray(indexed, mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    palette.save(tmp_path / "fundus_mask.png")
    _, rows, rejects = convert(tmp_path, label_names=((1, "optic disc"), (2, "cup")))
    assert rejects == []
    by_key = {r["source_uri"]: r for r in rows}
    assert set(by_key) == {"images/polyp1.png", "fundus.png"}
    (polyp,) = by_key["images/polyp1.png"]["masks"]
    np.testing.assert_array_equal(decode_png(polyp["data"]), binary > 0)
    fundus = {m["category"]: m for m in by_key["fundus.png"]["masks"]}
    assert set(fundus) == {"optic disc", "cup"} and fundus["cup"]["area_px"] == 12


def test_mask_of_another_size_is_rejected_with_reason(tmp_path):
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "x.png")
    Image.fromarray(np.zeros((11, 12), np.uint8)).save(tmp_path / "x_mask.png")
    _, rows, rejects = convert(tmp_path)
    assert rows == [] and [r.reason for r in rejects] == ["mask_size_mismatch"]
    assert "12x11" in rejects[0].detail


def test_orphan_mask_is_accounted_for(tmp_path):
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "masks" / "lonely.png")
    found, rows, rejects = convert(tmp_path)
    assert rows == [] and [r.reason for r in rejects] == ["orphan_label_map"]


def test_zip_archive_is_read_in_place_and_traversal_members_rejected(tmp_path):
    archive = tmp_path / "src" / "study.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("01.dcm", "02.dcm", "03.dcm", "liver_seg.nrrd"):
            zf.write(CT_DIR / name, f"ct/{name}")
        zf.writestr("../../evil.dcm", (CT_DIR / "01.dcm").read_bytes())
    before = {p for p in tmp_path.rglob("*")}
    found, rows, rejects = convert(archive.parent)
    assert {p for p in tmp_path.rglob("*")} == before  # nothing was extracted anywhere
    assert not (tmp_path / "evil.dcm").exists() and not (tmp_path.parent / "evil.dcm").exists()
    assert [r.reason for r in rejects] == ["unsafe_archive_member"]
    assert any("../../evil.dcm" in r.source_uri and "traversal" in r.detail for r in rejects)
    assert len(rows) == 3 and all(r["source_uri"].startswith("study.zip/ct/series-") for r in rows)
    categories = {m["category"] for r in rows for m in (r["masks"] or [])}
    assert categories == {"liver"}  # the label map inside the zip was attached and named from its file


def test_tar_archive_with_symlink_and_traversal(tmp_path):
    archive = tmp_path / "src" / "xr.tar.gz"
    archive.parent.mkdir()
    png = io.BytesIO()
    Image.fromarray(np.full((6, 6), 7, np.uint8)).save(png, format="PNG")
    with tarfile.open(archive, "w:gz") as tf:
        for name, data in (("good/a.png", png.getvalue()), ("../evil.png", png.getvalue())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("good/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    _, rows, rejects = convert(archive.parent)
    assert [r["source_uri"] for r in rows] == ["xr.tar.gz/good/a.png"]
    assert decode_png(rows[0]["images"][0]["data"]).max() == 7
    assert sorted(r.source_uri for r in rejects) == ["xr.tar.gz/../evil.png", "xr.tar.gz/good/link.png"]
    assert {r.reason for r in rejects} == {"unsafe_archive_member"}


def test_corrupt_archive_is_a_reject(tmp_path):
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    found, rows, rejects = convert(tmp_path)
    assert rows == [] and [r.reason for r in rejects] == ["bad_archive"]


def png_bytes(value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((6, 6), value, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def test_linked_files_and_folders_are_inputs_hidden_entries_are_not(tmp_path):
    """A DataLad/git-annex dataset or a symlink farm is a tree of links: linked files and
    folders are read through their links (each folder once, loops included); a dangling
    link is a reject; hidden entries (.git, .DS_Store, ._ resource forks) are skipped."""
    store, src = tmp_path / "store", tmp_path / "src"
    (store / "site-b").mkdir(parents=True)
    src.mkdir()
    (store / "a.png").write_bytes(png_bytes(11))
    (store / "site-b" / "b.png").write_bytes(png_bytes(22))
    (src / "c.png").write_bytes(png_bytes(33))
    (src / "a.png").symlink_to(store / "a.png")  # git-annex: the file is a link to its content
    (src / "site-b").symlink_to(store / "site-b", target_is_directory=True)
    (src / "again").symlink_to(src, target_is_directory=True)  # a loop
    (src / "up").symlink_to(tmp_path, target_is_directory=True)  # a loop through the source's parent
    (src / "gone.png").symlink_to(store / "deleted.png")  # dangling
    (src / ".git" / "annex").mkdir(parents=True)
    (src / ".git" / "annex" / "object.png").write_bytes(png_bytes(44))
    (src / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (src / "._c.png").write_bytes(b"\0\5\26\7 AppleDouble")

    found, rows, rejects = convert(src, modality="XR")

    pixels = {r["source_uri"]: int(decode_png(r["images"][0]["data"]).max()) for r in rows}
    assert pixels == {"a.png": 11, "c.png": 33, "site-b/b.png": 22}
    assert [(r.source_uri, r.reason) for r in rejects] == [("gone.png", "unreadable")]
    assert found.files_seen == 4


def test_hidden_members_of_an_archive_are_skipped(tmp_path):
    """Zips made on macOS carry __MACOSX/._* resource forks beside every file."""
    archive = tmp_path / "src" / "xr.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("xr/a.png", png_bytes(9))
        zf.writestr("__MACOSX/xr/._a.png", b"\0\5\26\7 AppleDouble")
        zf.writestr("xr/.DS_Store", b"\0\0\0\1Bud1")
    _, rows, rejects = convert(archive.parent, modality="XR")
    assert [r["source_uri"] for r in rows] == ["xr.zip/xr/a.png"] and rejects == []
