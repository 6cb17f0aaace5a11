"""UniMed: every source layout becomes grounded LLaVA-style conversations."""

from __future__ import annotations

from collections import defaultdict

from curation.images import decode_png
from tests.curation.recipes.families import assert_subject_level_splits


def test_each_layout_becomes_its_task(demo_build):
    built = demo_build("unimed")
    rows = built.rows
    by_source = defaultdict(list)
    for row in rows:
        by_source[row["source"]].append(row)
        turns = row["conversations"]
        assert turns[0]["from"] == "human" and turns[0]["value"].startswith("<image>\n")
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
    tasks = {s: {r["task"] for r in rs} for s, rs in by_source.items()}
    assert tasks == {
        "VQA_RAD": {"vqa"}, "APTOS2019": {"classification"}, "ISIC_classes": {"classification"},
        "IU_Xray": {"report"}, "CT_organs": {"referring_seg"}, "BrainT1T2": {"image2image"},
    }
    stages = {r["task"]: r["curriculum_stage"] for r in rows}
    assert stages == {"vqa": 2, "classification": 1, "report": 2, "referring_seg": 2, "image2image": 3}

    vqa = {r["conversations"][0]["value"].split("\n", 1)[1]: r["conversations"][1]["value"] for r in by_source["VQA_RAD"]}
    assert vqa == {"Is this a chest radiograph?": "Yes", "Which plane is this image taken in?": "PA", "Is the heart enlarged?": "No"}
    assert built.reasons()["missing_image"] == ["VQA_RAD/VQA_RAD Dataset Public.json:3"]

    aptos = {r["labels"][0] for r in by_source["APTOS2019"]}
    assert aptos == {"no diabetic retinopathy", "moderate diabetic retinopathy", "proliferative diabetic retinopathy"}
    for row in by_source["APTOS2019"] + by_source["ISIC_classes"]:
        assert row["conversations"][1]["value"] == f"{row['labels'][0]}."
        assert row["labels"][0] in row["caption"]
    prompts = {r["conversations"][0]["value"].split(" Options")[0] for r in by_source["APTOS2019"] + by_source["ISIC_classes"]}
    assert len(prompts) > 1  # prompt templates vary per sample

    near = next(r for r in built.rejects if r.reason == "near_duplicate")
    assert near.source_uri == "ISIC_classes/melanoma/ISIC_mel9999.jpg" and "ISIC_mel0000.png" in near.detail
    assert len(by_source["ISIC_classes"]) == 4

    for row in by_source["IU_Xray"]:
        answer = row["conversations"][1]["value"]
        assert answer.startswith("FINDINGS: ") and "\nIMPRESSION: " in answer and "INDICATION" not in answer
        assert row["caption"] in answer

    for row in by_source["CT_organs"]:
        image = next(i for i in row["images"] if i["role"] == "input")
        answers = [t["value"] for t in row["conversations"][1::2]]
        assert answers == [f"{m['category']}." for m in row["masks"]]
        for turn, mask in zip(row["conversations"][0::2], row["masks"], strict=True):
            x0, y0, x1, y1 = mask["bbox_xyxy"]
            box = f"[{round(x0 / image['width'] * 1000)}, {round(y0 / image['height'] * 1000)}, "
            assert box in turn["value"]
            assert decode_png(mask["data"])[y0:y1, x0:x1].sum() == mask["area_px"]

    for row in by_source["BrainT1T2"]:
        roles = [i["role"] for i in row["images"]]
        assert roles == ["input", "output"] and row["conversations"][1]["value"] == "<image>"
        assert "T1" in row["conversations"][0]["value"] and "T2" in row["conversations"][0]["value"]
    assert_subject_level_splits(rows)
