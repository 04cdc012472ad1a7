"""Batch inputs without a model: prompts, manifests, COCO files, folders, globs, output keys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ultrasam.inference.batch.inputs import collect_items, read_coco, scan_folder
from ultrasam.inference.batch.items import Item, assign_keys
from ultrasam.inference.batch.masks import decode_rle, encode_rle, mask_prompt_logits, polygons
from ultrasam.inference.batch.prompts import Prompt, prompt_from_fields
from ultrasam.inference.device import resolve_device


def _png(path: Path, size: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), 128, np.uint8)).save(path)
    return path


def test_prompt_cells_json_and_text_forms_agree() -> None:
    a = prompt_from_fields("[[10, 20], [5, 6, 0]]", None, "[1, 2, 30, 40]")
    b = prompt_from_fields("10,20;5,6,0", None, "1,2,30,40")
    c = prompt_from_fields([[10, 20], [5, 6]], [1, 0], [1, 2, 30, 40])
    assert a == b == c
    assert a.points == [(10.0, 20.0), (5.0, 6.0)] and a.labels == [1, 0]
    assert a.box == (1.0, 2.0, 30.0, 40.0)


@pytest.mark.parametrize("points, labels, box, match", [
    ("[[1, 2]]", "[1, 0]", None, "one label per point"),
    ("[[1, 2, 7]]", None, None, "foreground"),
    ("[[1, nan]]", None, None, "JSON"),
    (None, None, "[1, 2, 3]", "x0, y0, x1, y1"),
    (None, "1", None, "without points"),
    ("1,2;3", None, None, "X,Y"),
    ("[[1e400, 2]]", None, None, "finite"),
])
def test_bad_prompt_cells_name_the_problem(points, labels, box, match) -> None:
    with pytest.raises(ValueError, match=match):
        prompt_from_fields(points, labels, box)


def test_same_file_names_in_different_folders_get_distinct_keys(tmp_path: Path) -> None:
    files = [_png(tmp_path / "a" / "scan.png"), _png(tmp_path / "b" / "scan.png"),
             _png(tmp_path / "b" / "x.png"), _png(tmp_path / "b" / "x.jpg")]
    items = [Item(path=f, prompts=[Prompt(box=(1, 1, 9, 9))]) for f in files]
    items.append(Item(path=files[0], prompts=[], frame=3))
    assign_keys(items)
    assert [it.key for it in items] == ["a/scan", "b/scan", "b/x.png", "b/x.jpg",
                                        "a/scan.frame3"]
    single = [Item(path=files[0], prompts=[])]
    assign_keys(single)
    assert single[0].key == "scan"  # one file: outputs straight into --out, as before


def test_folder_scan_is_recursive_and_skips_outputs_hidden_and_other_files(
        tmp_path: Path) -> None:
    _png(tmp_path / "in" / "a.png")
    _png(tmp_path / "in" / "deep" / "er" / "b.PNG")
    _png(tmp_path / "in" / ".hidden" / "c.png")
    _png(tmp_path / "in" / "out" / "old.mask.png")
    (tmp_path / "in" / "notes.txt").write_text("x")
    dicom_like = tmp_path / "in" / "IM0001"
    dicom_like.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (tmp_path / "in" / "README").write_text("not dicom")
    found = scan_folder(tmp_path / "in", exclude=tmp_path / "in" / "out")
    assert [p.relative_to(tmp_path / "in").as_posix() for p in found] == \
        ["IM0001", "a.png", "deep/er/b.PNG"]


def test_inputs_files_globs_and_errors(tmp_path: Path) -> None:
    a = _png(tmp_path / "x" / "a.png")
    _png(tmp_path / "x" / "y" / "b.png")
    box = Prompt(box=(1, 1, 9, 9))
    items = collect_items([str(tmp_path / "x" / "**" / "*.png"), a], box)
    assert [it.path.name for it in items] == ["a.png", "b.png"]  # a.png merged, not twice
    with pytest.raises(ValueError, match="no file matches"):
        collect_items([str(tmp_path / "*.tif")], box)
    with pytest.raises(ValueError, match="no such file"):
        collect_items([str(tmp_path / "missing.png")], box)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        collect_items([tmp_path / "empty"], box)
    no_prompt = collect_items([a])
    assert no_prompt[0].problems and "no prompt" in no_prompt[0].problems[0]


def test_csv_and_jsonl_manifests(tmp_path: Path) -> None:
    _png(tmp_path / "imgs" / "a.png")
    _png(tmp_path / "imgs" / "b.png")
    _png(tmp_path / "imgs" / "m.png")
    csv = tmp_path / "m.csv"
    csv.write_text("path,points,labels,box,mask,id\n"
                   'imgs/a.png,"[[5, 5], [20, 20]]","[1, 0]",,,first\n'
                   "imgs/a.png,,,2,2,12,12,,\n"  # malformed (unquoted commas) -> item fails
                   "imgs/b.png,,,\"1,1,30,30\",imgs/m.png,\n", encoding="utf-8")
    a, b = collect_items([csv])
    assert a.problems and "quote cells" in a.problems[0]  # the bad row fails its image only
    assert not b.problems
    csv.write_text("path,points,labels,box,mask,id\n"
                   'imgs/a.png,"[[5, 5], [20, 20]]","[1, 0]",,,first\n'
                   'imgs/a.png,,,"2,2,12,12",,\n'
                   'imgs/b.png,,,"1,1,30,30",imgs/m.png,\n'
                   'imgs/b.png,,,"1,x,30,30",,\n', encoding="utf-8")
    items = collect_items([csv])
    assert len(items) == 2
    a, b = items
    assert a.id == "first" and len(a.prompts) == 2 and a.prompts[1].box == (2, 2, 12, 12)
    assert b.prompts[0].mask == str(tmp_path / "imgs" / "m.png")
    assert b.problems and "line 5" in b.problems[0]  # the bad row fails its image only
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"path": str(tmp_path / "imgs" / "a.png"), "frame": 2,
                                 "points": [[3, 4]]}) + "\n\n", encoding="utf-8")
    (item,) = collect_items([jsonl])
    assert item.frame == 2 and item.prompts[0].points == [(3.0, 4.0)]
    jsonl.write_text('{"path": "a.png", "colour": 1}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="unknown field"):
        collect_items([jsonl])


def _coco(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    _png(root / "images" / "i1.png", 40)
    _png(root / "images" / "i2.png", 40)
    ring = np.zeros((40, 40), bool)
    ring[5:35, 5:35] = True
    ring[10:30, 10:30] = False  # centroid falls in the hole
    ann = {"id": 7, "image_id": 1, "category_id": 3, "iscrowd": 0, "bbox": [5, 5, 30, 30],
           "segmentation": encode_rle(ring)}
    crowd = dict(ann, id=8, iscrowd=1)
    data = {"images": [{"id": 1, "file_name": "i1.png", "width": 40, "height": 40},
                       {"id": 2, "file_name": "i2.png", "width": 40, "height": 40}],
            "annotations": [ann, crowd], "categories": [{"id": 3, "name": "x"}]}
    path = root / "annotations.coco.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_coco_boxes_and_points_become_prompts(tmp_path: Path) -> None:
    path = _coco(tmp_path)
    (item,) = read_coco(path, "box")  # image 2 has no annotation; the crowd one is skipped
    assert item.path == path.parent / "images" / "i1.png"
    assert item.prompts == [Prompt(box=(5.0, 5.0, 35.0, 35.0))]
    assert item.coco.annotation_ids == [7] and item.coco.category_ids == [3]
    (item,) = read_coco(path, "point")
    x, y = item.prompts[0].points[0]
    ring = decode_rle(json.loads(path.read_text())["annotations"][0]["segmentation"])
    assert ring[int(y), int(x)], "the point prompt must lie inside the mask"


def test_mask_prompt_logits_follow_the_image_geometry() -> None:
    mask = np.zeros((50, 100), bool)
    mask[:, :50] = True  # left half
    logits = mask_prompt_logits(mask, input_size=(32, 64), img_size=64, mask_size=16)
    assert logits.shape == (1, 16, 16)
    assert (logits[0, :8, :8] > 5).all() and (logits[0, :8, 8:] < -5).all()
    assert (logits[0, 8:, :] < -5).all()  # padding below the resized image is background


def test_polygons_trace_the_outline() -> None:
    mask = np.zeros((20, 20), bool)
    mask[4:10, 3:12] = True
    (poly,) = polygons(mask)
    xs, ys = poly[0::2], poly[1::2]
    assert (min(xs), max(xs), min(ys), max(ys)) == (3, 11, 4, 9)


def test_device_validation_is_one_clear_line() -> None:
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="not a device name"):
        resolve_device("gpu0")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            resolve_device("cuda")


def test_malformed_coco_is_one_clear_error(tmp_path: Path) -> None:
    path = _coco(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"][0]["id"] = "seven"  # this annotation fails its image, with its id
    path.write_text(json.dumps(data))
    (item,) = read_coco(path)
    assert not item.prompts and "'seven'" in item.problems[0]
    data["images"][0]["id"] = "one"
    data["annotations"][0]["image_id"] = "one"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="integer 'id'"):
        read_coco(path)
