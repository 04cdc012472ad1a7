"""Converters of 16 US-43d sources without real samples, on synthetic native trees.

Each test writes (under ``tmp_path``) a tiny tree reproducing the documented native layout of
one dataset — file names, formats, label codes, archives — plus at least one defective file,
converts it, and checks exact image / instance counts, groups, frame / slice indices, splits and
labels, and that the defect is warned about by name while the rest converts.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from ultrasam.data.coco import CocoWriter
from ultrasam.data.sources import (brachial_plexus, echocp, gist514, kidneyus, luss_phantom,
                                   microseg, mmotu3d, mup, regpro, s1, segthy, stmus_nda,
                                   thyroid_cineclip, tn3k, tnscui, upbd)
from ultrasam.data.sources._base import Source

MODULES = (gist514, luss_phantom, microseg, mmotu3d, mup, regpro, s1, segthy, stmus_nda,
           thyroid_cineclip, tn3k, tnscui, upbd, brachial_plexus, echocp, kidneyus)


# -- writing synthetic files ----------------------------------------------------------------------
def encode(array: np.ndarray, ext: str) -> bytes:
    """PNG / JPEG / BMP bytes of an H x W (grey) or H x W x 3 (RGB) uint8 array."""
    data = array if array.ndim == 2 else cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, data, params)
    assert ok
    return buf.tobytes()


def put(root: Path, rel: str, data: bytes | str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def scan(h: int = 48, w: int = 64, value: int = 60) -> np.ndarray:
    """A grey test image with some texture (so JPEG keeps it grey)."""
    yy, xx = np.mgrid[:h, :w]
    return ((value + 3 * xx + yy) % 200 + 20).astype(np.uint8)


def blobs(shape: tuple[int, int], boxes: list[tuple[int, int, int, int, int]],
          dtype: Any = np.uint8) -> np.ndarray:
    """Label map with rectangles ``(x0, y0, x1, y1, value)`` (inclusive-exclusive)."""
    out = np.zeros(shape, dtype)
    for x0, y0, x1, y1, v in boxes:
        out[y0:y1, x0:x1] = v
    return out


def nifti_bytes(array: np.ndarray, gz: bool = True) -> bytes:
    """NIfTI bytes whose ``_volumes.read_nifti`` array is ``array`` (slowest axis first)."""
    import gzip

    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(array.T), np.eye(4))
    raw = img.to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def run(module: Any, root: Path, images_dir: Path | None = None) -> CocoWriter:
    spec = module.SOURCE.spec
    writer = CocoWriter(spec.name, list(spec.structures), images_dir=images_dir)
    module.SOURCE.convert(root, writer)
    return writer


def warned(writer: CocoWriter, fragment: str, text: str = "") -> bool:
    """True when a warning's file contains ``fragment`` and its message contains ``text``."""
    return any(fragment in w.file and text in w.message for w in writer.warnings)


def by_source(writer: CocoWriter) -> dict[str, dict[str, Any]]:
    return {Path(i["source"]).name: i for i in writer.images}


def structures_of(writer: CocoWriter, image_id: int) -> Counter:
    return Counter(a["structure"] for a in writer.annotations if a["image_id"] == image_id)


JUNK = b"this is not an image file"


# -- specs ----------------------------------------------------------------------------------------
def test_specs_are_complete_and_distinct() -> None:
    names: set[str] = set()
    for module in MODULES:
        source = module.SOURCE
        assert isinstance(source, Source)
        spec = source.spec
        assert spec.us43d and not spec.real_sample_tests
        assert spec.url.startswith("https://") and spec.citation and spec.licence
        for s in spec.structures:
            assert s == s.lower() and s.replace("_", "").isalnum(), s
        keys = {"".join(c for c in n.lower() if c.isalnum()) for n in (spec.name, *spec.aliases)}
        assert not keys & names, f"{spec.name} shares a name or alias"
        names |= keys
    assert "nerve" not in names and "brachialplexus" not in names  # the NERVE source's names


# -- 2D sources -----------------------------------------------------------------------------------
def test_tn3k(tmp_path: Path) -> None:
    shape = (48, 64)
    two = blobs(shape, [(4, 4, 20, 20, 255), (36, 24, 56, 44, 255)])
    one = blobs(shape, [(10, 10, 30, 30, 255)])
    put(tmp_path, "tn3k/trainval-image/0001.jpg", encode(scan(), ".jpg"))
    put(tmp_path, "tn3k/trainval-mask/0001.jpg", encode(two, ".jpg"))
    put(tmp_path, "tn3k/trainval-image/0002.jpg", encode(scan(value=90), ".jpg"))
    put(tmp_path, "tn3k/trainval-mask/0002.jpg", encode(one, ".jpg"))
    put(tmp_path, "tn3k/test-image/0003.jpg", encode(scan(), ".jpg"))
    put(tmp_path, "tn3k/test-mask/0003.jpg", encode(one, ".jpg"))
    put(tmp_path, "tn3k/test-image/0004.jpg", JUNK)
    put(tmp_path, "tn3k/test-mask/0004.jpg", encode(one, ".jpg"))
    put(tmp_path, "tn3k/trainval-mask/0005.jpg", encode(one, ".jpg"))
    w = run(tn3k, tmp_path)
    assert len(w.images) == 3
    assert Counter(i["split"] for i in w.images) == {"train": 2, "test": 1}
    assert w.counts() == {"thyroid_nodule": 4}
    assert structures_of(w, by_source(w)["0001.jpg"]["id"]) == {"thyroid_nodule": 2}
    assert warned(w, "test-image/0004.jpg", "cannot decode")
    assert warned(w, "trainval-mask/0005.jpg", "no matching image")


def test_tnscui_accepts_0_1_and_0_255_masks(tmp_path: Path) -> None:
    shape = (48, 64)
    put(tmp_path, "TNSCUI/JPEGImages/a.jpg", encode(scan(), ".jpg"))
    put(tmp_path, "TNSCUI/SegmentationClass/a.png",
        encode(blobs(shape, [(5, 5, 25, 25, 1)]), ".png"))
    put(tmp_path, "TNSCUI/JPEGImages/b.jpg", encode(scan(), ".jpg"))
    put(tmp_path, "TNSCUI/SegmentationClass/b.png",
        encode(blobs(shape, [(2, 2, 12, 12, 255), (30, 30, 50, 40, 255)]), ".png"))
    put(tmp_path, "TNSCUI/JPEGImages/c.jpg", encode(scan(), ".jpg"))
    put(tmp_path, "TNSCUI/SegmentationClass/c.png",
        encode(blobs(shape, [(2, 2, 12, 12, 255), (30, 30, 50, 40, 7)]), ".png"))
    w = run(tnscui, tmp_path)
    assert len(w.images) == 3
    ids = {k: v["id"] for k, v in by_source(w).items()}
    assert structures_of(w, ids["a.jpg"]) == {"thyroid_nodule": 1}  # 0/1 mask kept
    assert structures_of(w, ids["b.jpg"]) == {"thyroid_nodule": 2}
    assert structures_of(w, ids["c.jpg"]) == {"thyroid_nodule": 1}
    assert warned(w, "SegmentationClass/c.png", "7 (200 px)")
    assert len(w.warnings) == 1


def test_s1_labels_from_grey_values_and_splits(tmp_path: Path) -> None:
    shape = (48, 64)
    base = "Data/TrainingDataSet"
    put(tmp_path, f"{base}/Images/x1.png", encode(scan(), ".png"))
    put(tmp_path, f"{base}/Labels/x1.png", encode(blobs(shape, [(5, 5, 20, 20, 127)]), ".png"))
    put(tmp_path, f"{base}/Labels/General/x1.png", encode(blobs(shape, [(0, 0, 9, 9, 1)]), ".png"))
    put(tmp_path, f"{base}/Images/x2.png", encode(scan(), ".png"))
    put(tmp_path, f"{base}/Labels/x2.png", encode(blobs(shape, [(5, 5, 20, 20, 255)]), ".png"))
    test = "Data/TestingDataSet"
    put(tmp_path, f"{test}/Images/y1.jpg", encode(scan(), ".jpg"))
    put(tmp_path, f"{test}/Labels/y1.png",
        encode(blobs(shape, [(5, 5, 20, 20, 255), (40, 30, 50, 40, 60)]), ".png"))
    w = run(s1, tmp_path)
    images = by_source(w)
    assert len(w.images) == 3
    assert images["x1.png"]["label"] == "benign" and images["x2.png"]["label"] == "malignant"
    assert images["y1.jpg"]["label"] == "malignant"
    assert Counter(i["split"] for i in w.images) == {"train": 2, "test": 1}
    assert w.counts() == {"breast_lesion": 3}
    assert warned(w, "TestingDataSet/Labels/y1.png", "60 (100 px)")
    assert len(w.warnings) == 1  # the General mask is skipped, not a duplicate


def test_stmus_nda_nested_zip(tmp_path: Path) -> None:
    shape = (48, 64)
    inner_root = "Polito-Radboud-DeepLearningUS"
    inner = zip_bytes({
        f"{inner_root}/BB/Healthy/Images/1.png": encode(scan(), ".png"),
        f"{inner_root}/BB/Healthy/Masks/1.png": encode(blobs(shape, [(5, 5, 40, 30, 255)]), ".png"),
        f"{inner_root}/GM/Pathological/Images/2.png": encode(scan(), ".png"),
        f"{inner_root}/GM/Pathological/Masks/2.png": encode(blobs(shape, [(5, 5, 40, 30, 1)]),
                                                            ".png"),
        f"{inner_root}/TA/Healthy/Images/3.png": encode(scan(), ".png"),
        f"{inner_root}/TA/Healthy/Masks/3.png": JUNK,
    })
    put(tmp_path, "STMUS.zip", zip_bytes({"DATASET for Deep learning/DATASET_x.zip": inner}))
    w = run(stmus_nda, tmp_path)
    images = by_source(w)
    assert sorted(images) == ["1.png", "2.png"]
    assert (images["1.png"]["label"], images["1.png"]["muscle"]) == ("healthy", "biceps_brachii")
    assert (images["2.png"]["label"], images["2.png"]["muscle"]) == ("pathological",
                                                                     "gastrocnemius_medialis")
    assert images["1.png"]["source"].startswith("STMUS.zip/DATASET for Deep learning/")
    assert w.counts() == {"muscle": 2}
    assert warned(w, "TA/Healthy/Masks/3.png", "cannot decode")


def test_luss_phantom_grey_value_classes(tmp_path: Path) -> None:
    shape = (48, 64)
    put(tmp_path, "data/train/images/1.png", encode(scan(), ".png"))
    put(tmp_path, "data/train/masks/1.png",
        encode(blobs(shape, [(0, 0, 64, 4, 1), (0, 10, 64, 12, 2), (20, 20, 30, 40, 5)]), ".png"))
    put(tmp_path, "data/test/images/2.png", encode(scan(), ".png"))
    put(tmp_path, "data/test/masks/2.png",
        encode(blobs(shape, [(0, 20, 64, 22, 3), (40, 30, 45, 35, 9)]), ".png"))
    w = run(luss_phantom, tmp_path)
    assert len(w.images) == 2
    assert Counter(i["split"] for i in w.images) == {"train": 1, "test": 1}
    assert w.counts() == {"rib": 1, "pleural_line": 1, "a_line": 1, "b_line": 0,
                          "b_line_confluence": 1}
    assert warned(w, "data/test/masks/2.png", "9 (25 px)")


def test_mmotu3d_colour_and_binary_annotations(tmp_path: Path) -> None:
    shape = (48, 64)
    colour = np.zeros((*shape, 3), np.uint8)
    colour[5:25, 5:25] = (64, 0, 128)
    put(tmp_path, "OTU_3d/images/1.JPG", encode(scan(), ".jpg"))
    put(tmp_path, "OTU_3d/annotations/1.PNG", encode(colour, ".png"))
    put(tmp_path, "OTU_3d/images/2.JPG", encode(scan(), ".jpg"))
    put(tmp_path, "OTU_3d/annotations/2_binary.PNG",
        encode(blobs(shape, [(5, 5, 15, 15, 255), (30, 30, 40, 40, 255)]), ".png"))
    put(tmp_path, "OTU_3d/images/3.JPG", encode(scan(), ".jpg"))
    put(tmp_path, "OTU_3d/annotations/3.PNG", JUNK)
    put(tmp_path, "OTU_3d/train_cls.txt", "1.JPG 3\n3.JPG 1\n")
    put(tmp_path, "OTU_3d/val_cls.txt", "2.JPG 0\n")
    w = run(mmotu3d, tmp_path)
    images = by_source(w)
    assert sorted(images) == ["1.JPG", "2.JPG"]
    assert (images["1.JPG"]["split"], images["1.JPG"]["label"]) == ("train", "3")
    assert (images["2.JPG"]["split"], images["2.JPG"]["label"]) == ("val", "0")
    assert w.counts() == {"ovarian_tumor": 3}
    assert warned(w, "annotations/3.PNG", "cannot decode")


def test_kidneyus_capsule_and_regions(tmp_path: Path) -> None:
    shape = (48, 64)
    for name in ("k1", "k2", "k3"):
        put(tmp_path, f"images/{name}.png", encode(scan(), ".png"))
    m1 = "labels/reviewed_masks_1"
    m2 = "labels/reviewed_masks_2"
    put(tmp_path, f"{m1}/capsule/k1.png", encode(blobs(shape, [(4, 4, 60, 44, 1)]), ".png"))
    put(tmp_path, f"{m1}/regions/k1.png",
        encode(blobs(shape, [(4, 4, 60, 44, 3), (10, 10, 50, 38, 2), (25, 18, 35, 28, 1)]), ".png"))
    put(tmp_path, f"{m2}/capsule/k1.png",
        encode(blobs(shape, [(0, 0, 8, 8, 1), (20, 20, 28, 28, 1)]), ".png"))
    put(tmp_path, f"{m2}/capsule/k2.png", encode(blobs(shape, [(4, 4, 60, 44, 255)]), ".png"))
    put(tmp_path, f"{m1}/regions/k3.png",
        encode(blobs(shape, [(4, 4, 20, 20, 2), (40, 30, 50, 40, 4)]), ".png"))
    put(tmp_path, f"{m1}/capsule/k4.png", encode(blobs(shape, [(4, 4, 60, 44, 1)]), ".png"))
    w = run(kidneyus, tmp_path)
    images = by_source(w)
    assert sorted(images) == ["k1.png", "k2.png", "k3.png"]
    assert [images[k]["annotator"] for k in ("k1.png", "k2.png", "k3.png")] == [1, 2, 1]
    assert w.counts() == {"kidney_capsule": 2, "central_echo_complex": 1, "renal_medulla": 2,
                          "renal_cortex": 1}
    assert structures_of(w, images["k1.png"]["id"]) == {
        "kidney_capsule": 1, "central_echo_complex": 1, "renal_medulla": 1, "renal_cortex": 1}
    assert warned(w, "reviewed_masks_1/regions/k3.png", "4 (100 px)")
    assert warned(w, "reviewed_masks_1/capsule/k4.png", "no image")
    assert all(i["group"] is None for i in w.images)


def labelme(shapes: list[dict[str, Any]], h: int = 48, w: int = 64) -> dict[str, Any]:
    return {"version": "4.5.6", "flags": {}, "shapes": shapes, "imagePath": "x.jpg",
            "imageData": None, "imageHeight": h, "imageWidth": w}


def polygon(label: str, x0: int, y0: int, x1: int, y1: int) -> dict[str, Any]:
    return {"label": label, "shape_type": "polygon", "group_id": None, "flags": {},
            "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]}


def test_upbd_labelme_pinyin_labels(tmp_path: Path) -> None:
    for name in ("u1", "u2", "u3"):
        put(tmp_path, f"JPEGImages/{name}.jpg", encode(scan(), ".jpg"))
    doc1 = labelme([polygon("dongmai", 2, 2, 12, 12), polygon("shenjing ", 20, 20, 30, 30),
                    {"label": "jizhu", "shape_type": "rectangle", "points": [[40, 5], [60, 20]]},
                    polygon("xueguan", 40, 30, 50, 40)])
    put(tmp_path, "json_train/u1.json", json.dumps(doc1))
    put(tmp_path, "json_train/u2.json", '{"shapes": [{"label": "dongmai", "points": [[1, 1]')
    doc3 = labelme([polygon("zhifang", 5, 30, 25, 45), polygon("jingmai", 30, 2, 40, 12)])
    doc3["imagePath"] = "超声图像.jpg"
    put(tmp_path, "json_train/u3.json", json.dumps(doc3, ensure_ascii=False).encode("gb18030"))
    w = run(upbd, tmp_path)
    images = by_source(w)
    assert sorted(images) == ["u1.jpg", "u3.jpg"]
    assert w.counts() == {"artery": 1, "vein": 1, "muscle": 0, "nerve": 1, "fat": 1, "spine": 1}
    spine = next(a for a in w.annotations if a["structure"] == "spine")
    assert spine["bbox"] == [40.0, 5.0, 21.0, 16.0]  # rectangle corners are inclusive
    assert warned(w, "json_train/u1.json", "xueguan")
    assert warned(w, "json_train/u2.json", "malformed JSON")


def coco_doc(images: list[tuple[int, str]], annotations: list[tuple[int, int, int, list]]
             ) -> dict[str, Any]:
    return {
        "images": [{"id": i, "file_name": n, "height": 48, "width": 64} for i, n in images],
        "annotations": [{"id": a, "image_id": i, "category_id": c, "segmentation": s,
                         "iscrowd": 0} for a, i, c, s in annotations],
        "categories": [{"id": 1, "name": "leiomyoma"}, {"id": 2, "name": "GIST"}],
    }


def square(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def test_gist514_coco_polygons(tmp_path: Path) -> None:
    root = "usd514_jpeg_roi"
    for name in ("a", "b", "c", "d"):
        put(tmp_path, f"{root}/images/{name}.jpg", encode(scan(), ".jpg"))
    train = coco_doc([(1, "a.jpg"), (2, "b.jpg")],
                     [(1, 1, 2, [square(5, 5, 20, 20)]), (2, 2, 1, [square(5, 5, 20, 20)]),
                      (3, 2, 9, [square(30, 30, 40, 40)])])
    val = coco_doc([(7, "c.jpg"), (8, "missing.jpg")],
                   [(1, 7, 2, [square(2, 2, 10, 10), square(30, 30, 50, 40)])])
    put(tmp_path, f"{root}/annotations/train_anno_crop_split_0.json", json.dumps(train))
    put(tmp_path, f"{root}/annotations/val_anno_crop_split_0.json", json.dumps(val))
    put(tmp_path, f"{root}/annotations/train_anno_crop_split_1.json",
        json.dumps(coco_doc([(1, "d.jpg")], [])))
    w = run(gist514, tmp_path)
    images = by_source(w)
    assert sorted(images) == ["a.jpg", "b.jpg", "c.jpg"]
    assert [images[k]["split"] for k in ("a.jpg", "b.jpg", "c.jpg")] == ["train", "train", "test"]
    assert images["a.jpg"]["label"] == "gastrointestinal_stromal_tumor"
    assert images["b.jpg"]["label"] == "leiomyoma"
    assert w.counts() == {"gastrointestinal_stromal_tumor": 3, "leiomyoma": 1}
    a_box = next(a["bbox"] for a in w.annotations if a["image_id"] == images["a.jpg"]["id"])
    assert a_box == [5.0, 5.0, 16.0, 16.0]
    assert warned(w, "train_anno_crop_split_0.json", "unknown category 9")
    assert warned(w, "val_anno_crop_split_0.json", "missing.jpg")


def test_gist514_malformed_json_is_warned(tmp_path: Path) -> None:
    root = "usd514_jpeg_roi"
    put(tmp_path, f"{root}/images/a.jpg", encode(scan(), ".jpg"))
    put(tmp_path, f"{root}/annotations/train_anno_crop_split_0.json",
        json.dumps(coco_doc([(1, "a.jpg")], [(1, 1, 2, [square(5, 5, 20, 20)])])))
    put(tmp_path, f"{root}/annotations/val_anno_crop_split_0.json", '{"images": [')
    w = run(gist514, tmp_path)
    assert len(w.images) == 1 and w.counts()["gastrointestinal_stromal_tumor"] == 1
    assert warned(w, "val_anno_crop_split_0.json", "not a readable COCO file")


# -- volumes and videos ---------------------------------------------------------------------------
def volume(z: int = 4, h: int = 12, w: int = 16) -> np.ndarray:
    """Z x H x W uint8 volume whose slice k is filled with 10 * (k + 1)."""
    return np.stack([np.full((h, w), 10 * (k + 1), np.uint8) for k in range(z)])


def test_mup_and_microseg_share_the_record_without_duplicates(tmp_path: Path) -> None:
    record = "Micro_Ultrasound_Prostate_Segmentation_Dataset"
    lab1 = np.zeros((4, 12, 16), np.uint8)
    lab1[1, 2:6, 2:6] = 1
    lab1[2, 2:6, 2:6] = 1
    lab1[2, 8:10, 10:12] = 3  # unknown code
    lab2 = np.zeros((4, 12, 16), np.uint8)
    lab2[0, 2:6, 2:6] = 1
    lab2[3, 1:4, 1:4] = 1
    lab2[3, 8:11, 8:11] = 1
    put(tmp_path, f"{record}/train/micro_ultrasound_scans/microUS_train_01.nii.gz",
        nifti_bytes(volume()))
    put(tmp_path, f"{record}/train/micro_ultrasound_scans/microUS_train_02.nii.gz",
        nifti_bytes(volume()))
    put(tmp_path, f"{record}/train/expert_annotations/expert_annotation_train_01.nii.gz",
        nifti_bytes(lab1))
    put(tmp_path, f"{record}/train/non_expert_annotations/non_expert_annotation_train_01.nii.gz",
        nifti_bytes(lab2))
    put(tmp_path, f"{record}/train/non_expert_annotations/non_expert_annotation_train_02.nii.gz",
        nifti_bytes(lab2))
    put(tmp_path, f"{record}/test/micro_ultrasound_scans/microUS_test_01.nii.gz",
        nifti_bytes(volume()))
    put(tmp_path, f"{record}/test/expert_annotations/expert_annotation_test_01.nii.gz", JUNK)

    w = run(mup, tmp_path)
    assert [(i["group"], i["split"], i["slice"]) for i in w.images] == [
        ("train_01", "train", 1), ("train_01", "train", 2)]
    assert w.counts() == {"prostate": 2}
    assert warned(w, "expert_annotation_train_01.nii.gz", "3 (4 px)")
    assert warned(w, "expert_annotation_test_01.nii.gz", "not a readable NIfTI")
    assert warned(w, "microUS_train_02.nii.gz", "left to MicroSeg")

    m = run(microseg, tmp_path)
    assert [(i["group"], i["split"], i["slice"]) for i in m.images] == [
        ("train_02", "train", 0), ("train_02", "train", 3)]
    assert m.counts() == {"prostate": 3}
    assert not {i["source"] for i in w.images} & {i["source"] for i in m.images}
    assert m.warnings == []


def test_regpro_pairs_label_channels_with_the_same_slice(tmp_path: Path) -> None:
    image = volume(z=5)
    label = np.zeros((3, 5, 12, 16), np.uint8)  # C x Z x Y x X
    label[0, 1:4, 3:9, 3:9] = 1  # gland on slices 1-3
    label[1, 2, 0:2, 12:14] = 1  # landmark on slice 2
    label[2, 4, 9:11, 0:3] = 1  # landmark on slice 4
    train = zip_bytes({
        "train/us_images/case000001.nii.gz": nifti_bytes(image),
        "train/us_labels/case000001.nii.gz": nifti_bytes(label),
        "train/mr_images/case000001.nii.gz": nifti_bytes(volume(z=2)),
        "train/mr_labels/case000001.nii.gz": nifti_bytes(np.zeros((2, 2, 12, 16), np.uint8)),
    })
    val = zip_bytes({
        "val/us_images/case000002.nii.gz": nifti_bytes(image),
        "val/us_labels/case000002.nii.gz": JUNK,
    })
    native, out = tmp_path / "native", tmp_path / "png"
    put(native, "train.zip", train)
    put(native, "val.zip", val)
    w = run(regpro, native, images_dir=out)
    assert [(i["slice"], i["group"], i["split"]) for i in w.images] == [
        (1, "case000001", "train"), (2, "case000001", "train"), (3, "case000001", "train"),
        (4, "case000001", "train")]
    assert w.counts() == {"prostate": 3, "prostate_landmark": 2}
    assert structures_of(w, w.images[1]["id"]) == {"prostate": 1, "prostate_landmark": 1}
    for record in w.images:  # pixels come from the image slice of the same index
        png = cv2.imread(str(out / record["file_name"]), cv2.IMREAD_UNCHANGED)
        assert int(png[0, 0]) == 10 * (record["slice"] + 1)
    assert warned(w, "val.zip/val/us_labels/case000002.nii.gz", "not a readable NIfTI")
    assert regpro.channels_first(np.zeros((12, 16, 5, 3)), (12, 16, 5)).shape == (3, 12, 16, 5)


def test_segthy_thyroid_carotid_jugular(tmp_path: Path) -> None:
    gt = "US_volunteer_dataset/ground_truth_data"
    lab = np.zeros((4, 12, 16), np.uint8)
    lab[0, 2:6, 2:6] = 1
    lab[1, 2:6, 2:6] = 1
    lab[1, 8:11, 0:3] = 2
    lab[1, 8:11, 12:15] = 4
    lab[3, 0:2, 0:2] = 5
    bad = np.zeros((4, 12, 16), np.uint8)
    bad[2, 2:6, 2:6] = 1
    bad[2, 9:11, 9:11] = 7
    put(tmp_path, f"{gt}/US/P01_US.nii", nifti_bytes(volume(), gz=False))
    put(tmp_path, f"{gt}/US_thyroid_label/P01.nii", nifti_bytes(lab, gz=False))
    put(tmp_path, f"{gt}/US/P02_US.nii", nifti_bytes(volume(), gz=False))
    put(tmp_path, f"{gt}/US_thyroid_label/P02.nii", nifti_bytes(bad, gz=False))
    put(tmp_path, f"{gt}/US/P03_US.nii", nifti_bytes(volume(), gz=False))
    put(tmp_path, "MRI_volunteer_dataset/MRI/P01.nii.gz", nifti_bytes(volume()))
    put(tmp_path, "MRI_volunteer_dataset/MRI_thyroid_label/P01.nii.gz", nifti_bytes(lab))
    w = run(segthy, tmp_path)
    assert [(i["group"], i["slice"]) for i in w.images] == [("p01", 0), ("p01", 1), ("p01", 3),
                                                            ("p02", 2)]
    assert w.counts() == {"thyroid_gland": 3, "carotid_artery": 2, "jugular_vein": 1}
    assert warned(w, "US_thyroid_label/P02.nii", "7 (4 px)")
    assert warned(w, "US/P03_US.nii", "no label volume")
    assert not any("MRI" in i["source"] for i in w.images)


def test_echocp_frames_grouped_by_patient(tmp_path: Path) -> None:
    frames = volume(z=6)
    rest = np.zeros((6, 12, 16), np.uint8)
    rest[0, 0:4, 0:4] = 1
    rest[0, 0:4, 8:12] = 2
    rest[5, 6:10, 0:4] = 3
    rest[5, 6:10, 8:12] = 4
    valsalva = np.zeros((6, 12, 16), np.uint8)
    valsalva[2, 0:4, 0:4] = 1
    valsalva[2, 8:10, 12:14] = 6
    d = "EchoCP_dataset"
    put(tmp_path, f"{d}/001_r_image.nii.gz", nifti_bytes(frames))
    put(tmp_path, f"{d}/001_r_label.nii.gz", nifti_bytes(rest))
    put(tmp_path, f"{d}/001_v_image.nii.gz", nifti_bytes(frames))
    put(tmp_path, f"{d}/001_v_label.nii.gz", nifti_bytes(valsalva))
    put(tmp_path, f"{d}/002_r_image.nii.gz", nifti_bytes(frames))
    w = run(echocp, tmp_path)
    assert [(i["group"], i["frame"], i["action"]) for i in w.images] == [
        ("001", 0, "rest"), ("001", 5, "rest"), ("001", 2, "valsalva")]
    assert w.counts() == {"left_ventricle": 2, "left_atrium": 1, "right_atrium": 1,
                          "right_ventricle": 1}
    assert warned(w, "001_v_label.nii.gz", "6 (4 px)")
    assert warned(w, "002_r_image.nii.gz", "no matching label")


def test_thyroid_cineclip_hdf5(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    n, h, w_ = 6, 16, 20
    images = np.stack([np.full((h, w_), 20 * k, np.uint8) for k in range(n)])
    masks = np.zeros((n, h, w_), np.uint8)
    for k in (0, 1, 3, 4, 5):
        masks[k, 2:8, 2:8] = 1 if k < 3 else 255
    masks[4, 10:12, 10:12] = 3
    with h5py.File(tmp_path / "dataset.hdf5", "w") as f:
        f["image"] = images
        f["mask"] = masks
        f["annot_id"] = np.array([b"1_", b"1_", b"1_", b"2_", b"2_", b"2_"])
        f["frame_num"] = np.array([0, 1, 2, 0, 1, 2])
    put(tmp_path, "metadata.csv", "annot_id,histopath_diagnosis\n1_,Benign\n2_,Malignant\n")
    put(tmp_path, "extra/broken.hdf5", JUNK)
    w = run(thyroid_cineclip, tmp_path)
    assert [(i["group"], i["frame"], i["label"]) for i in w.images] == [
        ("1_", 0, "benign"), ("1_", 1, "benign"), ("2_", 0, "malignant"),
        ("2_", 1, "malignant"), ("2_", 2, "malignant")]
    assert w.counts() == {"thyroid_nodule": 5}
    assert warned(w, "dataset.hdf5", "3 (4 px)")
    assert warned(w, "extra/broken.hdf5", "not a readable HDF5")


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    writer.release()


def test_brachial_plexus_masks_pair_by_frame_number(tmp_path: Path) -> None:
    shape = (48, 64)
    write_video(tmp_path / "data/Sonosite/videos/s001.mp4",
                [np.full(shape, 30 * k + 20, np.uint8) for k in range(5)])
    nerve = encode(blobs(shape, [(10, 10, 30, 30, 255)]), ".jpg")
    for k in range(5):
        data = nerve if k != 3 else encode(np.zeros(shape, np.uint8), ".jpg")
        put(tmp_path, f"data/Sonosite/ac_masks/s001/s001_{k:03d}.jpg", data)
    put(tmp_path, "data/Sonosite/ac_masks/s001/s001_007.jpg", nerve)
    needle = encode(blobs(shape, [(40, 5, 60, 9, 255)]), ".jpg")
    put(tmp_path, "data/Sonosite/needle/needle_masks/s001/s001_002.jpg", needle)
    put(tmp_path, "data/Sonosite/needle/needle_masks/s001/s001_004.jpg", needle)
    put(tmp_path, "data/Sonosite/needle/needle_masks/readme.md", "masks of each video frame\n")
    put(tmp_path, "data/Butterfly/ac_masks/b002/b002_000.jpg", nerve)
    w = run(brachial_plexus, tmp_path)
    assert [(i["frame"], i["group"], i["device"]) for i in w.images] == [
        (k, "s001", "Sonosite") for k in range(5)]
    assert w.counts() == {"brachial_plexus": 4, "needle": 2}
    frame_of = {i["id"]: i["frame"] for i in w.images}
    assert sorted(frame_of[a["image_id"]] for a in w.annotations
                  if a["structure"] == "needle") == [2, 4]
    assert warned(w, "videos/s001.mp4", "first: 7")
    assert warned(w, "ac_masks/b002/b002_000.jpg", "no video file")


# -- helpers of _shapes ---------------------------------------------------------------------------
def test_shapes_helpers() -> None:
    from ultrasam.data.sources._shapes import (binary_mask_values, coco_segmentation_mask,
                                               fill_holes, first_int, points_to_polygon,
                                               polygon_mask, split_label_values)

    ring = np.zeros((9, 9), bool)
    ring[1, 1:8] = ring[7, 1:8] = ring[1:8, 1] = ring[1:8, 7] = True
    filled = fill_holes(ring)
    assert filled.sum() == 49 and filled[4, 4]
    open_curve = np.zeros((9, 9), bool)
    open_curve[1:8, 1] = True
    assert (fill_holes(open_curve) == open_curve).all()
    assert points_to_polygon([0.4, 1.6, 3, 4]).tolist() == [[0, 2], [3, 4]]
    with pytest.raises(ValueError):
        polygon_mask([[[0, 0], [5, 5]]], (8, 8))
    m = coco_segmentation_mask([[1, 1, 4, 1, 4, 3, 1, 3]], (6, 6))
    assert m.sum() == 12 and m[1:4, 1:5].all()
    masks, unknown = split_label_values(np.array([[0, 2, 4], [5, 3, 9]]), {2: "a", 4: "a", 3: "b"})
    assert masks["a"].sum() == 2 and masks["b"].sum() == 1 and unknown == {5: 1, 9: 1}
    fg, unknown = binary_mask_values(np.array([[0, 1, 255, 7]], np.uint8))
    assert fg.tolist() == [[False, True, True, False]] and unknown == {7: 1}
    assert first_int("microUS_train_07.nii.gz") == 7 and first_int("abc") is None


def test_overlapping_polygons_give_their_union() -> None:
    from ultrasam.data.sources._shapes import polygon_mask

    a = [[0, 0], [10, 0], [10, 10], [0, 10]]
    b = [[5, 5], [15, 5], [15, 15], [5, 15]]
    union = polygon_mask([a, b], (20, 20))
    assert union[7, 7]  # the overlap stays foreground
    assert union.sum() == (polygon_mask([a], (20, 20)) | polygon_mask([b], (20, 20))).sum()
