"""Tests of ultrasam.evaluate; ``write_synthetic_coco`` builds small COCO datasets on disk,
``write_tiny_corpus`` a one-dataset corpus folder of 12 single-lesion images to split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils


def _rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def write_synthetic_coco(folder: Path, dataset: str = "SYN", size: int = 64,
                         seed: int = 0) -> Path:
    """A per-dataset folder (``images/`` + ``annotations.coco.json``) with four grey images.

    Image 1 (val): a bright disk and a bright ellipse; image 2 (val): one ellipse and a 2-pixel
    instance (too small to prompt); image 3 (val): no instance; image 4 (train): one disk.
    Returns the JSON path.
    """
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    shapes = {
        1: [("lesion", ("circle", (20, 22), 9)), ("vessel", ("ellipse", (44, 40), (10, 6)))],
        2: [("lesion", ("ellipse", (30, 30), (14, 9))), ("lesion", ("dot", (58, 58), 2))],
        3: [],
        4: [("lesion", ("circle", (32, 32), 12))],
    }
    cats = {"lesion": 1, "vessel": 2}
    images, anns = [], []
    for image_id, items in shapes.items():
        img = rng.normal(60, 12, (size, size))
        for structure, (kind, centre, extent) in items:
            m = np.zeros((size, size), np.uint8)
            if kind == "circle":
                cv2.circle(m, centre, extent, 1, -1)
            elif kind == "ellipse":
                cv2.ellipse(m, centre, extent, 0, 0, 360, 1, -1)
            else:
                m[centre[1], centre[0]:centre[0] + extent] = 1
            img[m > 0] += 120
            rle = _rle(m > 0)
            bbox = [float(v) for v in mask_utils.toBbox({**rle, "counts": rle["counts"].encode()})]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cats[structure],
                         "segmentation": rle, "area": int(m.sum()), "bbox": bbox, "iscrowd": 0})
        name = f"{dataset}__{image_id:05d}.png"
        cv2.imwrite(str(folder / "images" / name), np.clip(img, 0, 255).astype(np.uint8))
        images.append({"id": image_id, "file_name": name, "width": size, "height": size,
                       "split": "train" if image_id == 4 else "val", "group": None,
                       **({"pixel_spacing_mm": 0.5} if image_id == 1 else {})})
    coco = {"info": {"dataset": dataset}, "images": images, "annotations": anns,
            "categories": [{"id": i, "name": n, "supercategory": "x"} for n, i in cats.items()]}
    path = folder / "annotations.coco.json"
    path.write_text(json.dumps(coco), encoding="utf-8")
    return path


def write_tiny_corpus(corpus: Path) -> Path:
    """A corpus folder with one dataset ``DS``: 12 random 40 x 40 images, one lesion each, one
    patient group each (so a split may put any image anywhere). Returns ``corpus``."""
    from ultrasam.data.coco import CocoWriter, write_json

    writer = CocoWriter("DS", ["lesion"], images_dir=corpus / "DS" / "images")
    rng = np.random.default_rng(0)
    for i in range(12):
        mask = np.zeros((40, 40), bool)
        mask[5 + i:20 + i, 8:30] = True
        writer.add_image(rng.integers(0, 255, (40, 40), dtype=np.uint8), {"lesion": mask},
                         source=f"img{i}.png", group=f"p{i}")
    write_json(corpus / "DS" / "annotations.coco.json", writer.to_coco())
    return corpus
