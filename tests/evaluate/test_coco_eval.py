"""Ground-truth loading (single file, corpus, split) and class-agnostic COCO mAP."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ultrasam.evaluate.coco_eval import class_agnostic, coco_map, encode_result, \
    load_ground_truth

from . import write_synthetic_coco, write_tiny_corpus


def test_single_file_keeps_ids_filters_split_and_merges_categories(tmp_path: Path) -> None:
    path = write_synthetic_coco(tmp_path / "SYN")
    gt = load_ground_truth(path, split="val")
    assert [im.image_id for im in gt.images] == [1, 2]          # 3 has no instance, 4 is train
    assert gt.n_images_without_instances == 1
    assert gt.coco["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert {a["category_id"] for a in gt.coco["annotations"]} == {1}
    assert [a["id"] for a in gt.coco["annotations"]] == [1, 2, 3, 4]
    first = gt.images[0]
    assert first.path == tmp_path / "SYN" / "images" / "SYN__00001.png"
    assert first.spacing_mm == (0.5, 0.5) and gt.images[1].spacing_mm is None
    assert [i.structure for i in first.instances] == ["lesion", "vessel"]
    assert first.dataset == "SYN"
    m = first.instances[0].mask(64, 64)
    assert m.sum() == gt.coco["annotations"][0]["area"]


def test_corpus_folder_is_merged_with_sequential_ids(tmp_path: Path) -> None:
    write_synthetic_coco(tmp_path / "corpus" / "B_SET", dataset="B_SET")
    write_synthetic_coco(tmp_path / "corpus" / "A_SET", dataset="A_SET")
    gt = load_ground_truth(tmp_path / "corpus")
    assert [im.dataset for im in gt.images] == ["A_SET"] * 3 + ["B_SET"] * 3
    assert [im.image_id for im in gt.images] == [1, 2, 3, 4, 5, 6]
    assert [r["orig_image_id"] for r in gt.coco["images"]] == [1, 2, 4, 1, 2, 4]
    assert [a["id"] for a in gt.coco["annotations"]] == list(range(1, 11))
    assert gt.coco["images"][3]["file_name"] == "B_SET/images/B_SET__00001.png"
    assert gt.images[3].path.is_file()


def test_merged_file_relative_to_its_folder_and_max_images(tmp_path: Path) -> None:
    path = write_synthetic_coco(tmp_path / "SYN")
    data = json.loads(path.read_text())
    for im in data["images"]:
        im["file_name"] = "images/" + im["file_name"]
    merged = tmp_path / "SYN" / "merged.json"
    merged.write_text(json.dumps(data))
    gt = load_ground_truth(merged, max_images=2, seed=1)
    assert len(gt.images) == 2 and all(im.path.is_file() for im in gt.images)
    ids = {im.image_id for im in gt.images}
    assert {a["image_id"] for a in gt.coco["annotations"]} == ids


def test_bad_data_is_reported(tmp_path: Path) -> None:
    path = write_synthetic_coco(tmp_path / "SYN")
    with pytest.raises(ValueError, match="splits present"):
        load_ground_truth(path, split="test")
    with pytest.raises(FileNotFoundError):
        load_ground_truth(tmp_path / "nowhere.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="annotations.coco.json"):
        load_ground_truth(empty)
    shutil.copy(path, tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_ground_truth(tmp_path / "bad.json")


def _pycocotools_map(gt_path: Path, results_path: Path, use_cats: bool = True) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        ev = COCOeval(coco_gt, coco_gt.loadRes(str(results_path)), "segm")
        ev.params.useCats = int(use_cats)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(ev.stats[0]), float(ev.stats[1])]


def test_coco_map_matches_pycocotools_and_perfect_is_one(tmp_path: Path) -> None:
    path = write_synthetic_coco(tmp_path / "SYN")
    gt = load_ground_truth(path, split="val")
    perfect, shifted = [], []
    for im in gt.images:
        for k, inst in enumerate(im.instances):
            m = inst.mask(im.height, im.width)
            perfect.append(encode_result(im.image_id, m, 0.9))
            shifted.append(encode_result(im.image_id, np.roll(m, k + 1, axis=1), 0.5 + 0.1 * k))
    assert coco_map(gt.coco, perfect)["segm_mAP"] == pytest.approx(1.0)
    got = coco_map(gt.coco, shifted)
    assert 0 < got["segm_mAP"] < 1
    (tmp_path / "gt.json").write_text(json.dumps(gt.coco))
    (tmp_path / "res.json").write_text(json.dumps(shifted))
    # Against the evaluated ground truth, and against the original file with useCats=0.
    expected = _pycocotools_map(tmp_path / "gt.json", tmp_path / "res.json")
    assert [got["segm_mAP"], got["segm_mAP_50"]] == expected
    # Without the split filter the evaluated ground truth is the original file, categories
    # ignored: the same numbers as pycocotools' useCats=0 on the file itself.
    gt_all = load_ground_truth(path)
    every = [encode_result(im.image_id, np.roll(inst.mask(im.height, im.width), 2, axis=0), 1.0)
             for im in gt_all.images for inst in im.instances]
    (tmp_path / "all.json").write_text(json.dumps(every))
    ours = coco_map(gt_all.coco, every)
    assert [ours["segm_mAP"], ours["segm_mAP_50"]] == pytest.approx(
        _pycocotools_map(path, tmp_path / "all.json", use_cats=False))
    assert coco_map(gt.coco, [])["segm_mAP"] == 0.0
    with pytest.raises(ValueError, match="class-agnostic"):
        coco_map(json.loads(path.read_text()), shifted)


def test_class_agnostic_copies(tmp_path: Path) -> None:
    data = json.loads(write_synthetic_coco(tmp_path / "SYN").read_text())
    out = class_agnostic(data)
    assert {a["category_id"] for a in out["annotations"]} == {1}
    assert {a["category_id"] for a in data["annotations"]} == {1, 2}   # input untouched


def test_merged_split_written_elsewhere_finds_its_images(tmp_path: Path) -> None:
    """`data split CORPUS --out OTHER` writes merges whose images live in CORPUS
    (info.image_root); evaluation must read them from there."""
    from ultrasam.data.corpus import split_corpus

    corpus = write_tiny_corpus(tmp_path / "corpus")
    out = tmp_path / "elsewhere"
    split_corpus(corpus, out_dir=out, seed=0, progress=False)
    total = 0
    for split in ("train", "val", "test"):
        merged = out / f"{split}.coco.json"
        gt = load_ground_truth(merged)
        for image in gt.images:
            assert image.path.is_file(), image.path
        total += len(gt.images)
    assert total == 12
