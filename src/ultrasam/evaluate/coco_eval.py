"""Ground truth for evaluation and class-agnostic COCO mask mAP via pycocotools.

The paper's protocol (UltraSam, arXiv:2411.16222) scores masks with pycocotools' ``COCOeval``
(``segm``) after merging every category into one ``object``: a prompted model is told *which*
instance to segment, so categories carry no information. Predictions are one per ground-truth
instance, in COCO results format (``image_id``, ``category_id`` = 1, RLE ``segmentation`` with a
string ``counts``, ``score``).

``--data`` is either one COCO JSON (a per-dataset ``annotations.coco.json`` whose ``file_name``
is relative to the ``images/`` folder beside it, or a merged file whose ``file_name`` is relative
to the JSON's folder) or a corpus folder holding one such dataset folder per dataset. With
``split`` given, a corpus folder holding ``<split>.coco.json`` (the corpus's seeded split) is
read through that merge, as training does. A single
JSON keeps its image and annotation ids, so predictions can be checked against the original file;
a corpus is merged with sequential ids (dataset by dataset, in name order), the original ids kept
in ``orig_image_id`` / ``orig_id``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from ultrasam.data.coco import read_coco
from ultrasam.data.sample import spacing_of

log = logging.getLogger(__name__)

ANNOTATIONS_NAME = "annotations.coco.json"
OBJECT_CATEGORY: dict[str, Any] = {"id": 1, "name": "object", "supercategory": "object"}


@dataclass(frozen=True)
class GtInstance:
    """One ground-truth instance: its annotation id (in ``GroundTruth.coco``), COCO box XYWH."""

    ann_id: int
    bbox: tuple[float, float, float, float]
    structure: str
    segmentation: Any  # RLE dict or polygon list, as in the COCO file

    def mask(self, height: int, width: int) -> np.ndarray:
        """H x W bool mask of the instance."""
        return annotation_mask(self.segmentation, height, width)


@dataclass(frozen=True)
class GtImage:
    """One image of the evaluation set with its instances (possibly none)."""

    image_id: int
    path: Path
    height: int
    width: int
    dataset: str
    spacing_mm: tuple[float, float] | None  # (row, col) at the stored size, when known
    instances: tuple[GtInstance, ...]


@dataclass
class GroundTruth:
    """The evaluated ground truth.

    ``coco``: class-agnostic COCO dict restricted to ``images`` (what predictions are scored
    against); ``images``: the images with at least one instance, in id order;
    ``n_images_without_instances``: filtered images skipped because they hold no instance.
    """

    coco: dict[str, Any]
    images: list[GtImage]
    n_images_without_instances: int
    source: str
    split: str | None


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """H x W bool mask from a COCO segmentation (RLE with str/bytes/list counts, or polygons)."""
    if isinstance(segmentation, list):
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation, dict):
        counts = segmentation.get("counts")
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        elif isinstance(counts, str):
            rle = {"size": segmentation["size"], "counts": counts.encode("ascii")}
        else:
            rle = segmentation
    else:
        raise TypeError(f"unsupported segmentation of type {type(segmentation).__name__}")
    m = mask_utils.decode(rle).astype(bool)
    if m.shape != (height, width):
        raise ValueError(f"segmentation is {m.shape}, image is {(height, width)}")
    return m


def encode_result(image_id: int, mask: np.ndarray, score: float) -> dict[str, Any]:
    """One COCO results record for an H x W bool mask (category 1, RLE with string counts)."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"image_id": int(image_id), "category_id": OBJECT_CATEGORY["id"],
            "segmentation": rle, "score": float(score)}


def _dataset_files(data: Path, split: str | None = None) -> list[Path]:
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise FileNotFoundError(f"--data not found: {data}")
    if split is not None and (data / f"{split}.coco.json").is_file():
        # The corpus's own split (``ultrasam data split``), as training reads it
        # (ultrasam.data.dataset.coco_files); per-dataset files hold official splits only.
        return [data / f"{split}.coco.json"]
    if (data / ANNOTATIONS_NAME).is_file():
        return [data / ANNOTATIONS_NAME]
    files = sorted(p / ANNOTATIONS_NAME for p in data.iterdir()
                   if (p / ANNOTATIONS_NAME).is_file())
    if not files:
        raise FileNotFoundError(f"{data} holds no {ANNOTATIONS_NAME} "
                                "(nor dataset folders with one)")
    return files


def _image_root(json_path: Path, images: list[dict[str, Any]],
                info: dict[str, Any] | None = None) -> Path:
    # Merged files written into another folder than their corpus record where the images are
    # (info.image_root, relative to the JSON's folder). Otherwise per-dataset files name images
    # relative to images/ beside them, merged files relative to their own folder: decide once
    # per file from the first image that exists either way.
    folder = json_path.parent
    if info and info.get("image_root"):
        return (folder / str(info["image_root"])).resolve()
    for im in images:
        if (folder / "images" / im["file_name"]).is_file():
            return folder / "images"
        if (folder / im["file_name"]).is_file():
            return folder
    return folder / "images" if (folder / "images").is_dir() else folder


def _structure_names(coco: dict[str, Any]) -> dict[int, str]:
    return {int(c["id"]): str(c["name"]) for c in coco["categories"]}


def load_ground_truth(data: str | Path, split: str | None = None,
                      max_images: int | None = None, seed: int = 0) -> GroundTruth:
    """Read ``--data`` (module docstring), keep ``split``, merge categories into ``object``.

    Images without instances are skipped (counted). ``max_images``: a seeded random subset of
    the images with instances (kept in id order), for quick runs.
    """
    data = Path(data)
    files = _dataset_files(data, split)
    merged = len(files) > 1
    images: list[GtImage] = []
    gt_images: list[dict[str, Any]] = []
    gt_anns: list[dict[str, Any]] = []
    n_empty, n_filtered, splits_seen = 0, 0, set()
    for path in files:
        coco = read_coco(path)
        names = _structure_names(coco)
        root = _image_root(path, coco["images"], coco.get("info"))
        default_dataset = str(coco.get("info", {}).get("dataset") or path.parent.name)
        anns_by_image: dict[int, list[dict[str, Any]]] = {}
        for a in coco["annotations"]:
            anns_by_image.setdefault(int(a["image_id"]), []).append(a)
        for im in sorted(coco["images"], key=lambda r: int(r["id"])):
            splits_seen.add(im.get("split"))
            if split is not None and im.get("split") != split:
                continue
            n_filtered += 1
            anns = sorted(anns_by_image.get(int(im["id"]), []), key=lambda r: int(r["id"]))
            if not anns:
                n_empty += 1
                continue
            image_id = len(gt_images) + 1 if merged else int(im["id"])
            record = {**im, "id": image_id}
            if merged:
                record["orig_image_id"] = int(im["id"])
                record["file_name"] = str((root / im["file_name"]).relative_to(data))
            record.setdefault("dataset", default_dataset)
            gt_images.append(record)
            instances = []
            for a in anns:
                ann_id = len(gt_anns) + 1 if merged else int(a["id"])
                structure = str(a.get("structure") or names.get(int(a["category_id"]), "object"))
                h, w = int(im["height"]), int(im["width"])
                area = a.get("area")
                if area is None:
                    area = int(annotation_mask(a["segmentation"], h, w).sum())
                new = {**a, "id": ann_id, "image_id": image_id,
                       "category_id": OBJECT_CATEGORY["id"], "structure": structure,
                       "iscrowd": int(a.get("iscrowd", 0)), "area": float(area)}
                if merged:
                    new["orig_id"] = int(a["id"])
                gt_anns.append(new)
                x, y, bw, bh = (float(v) for v in a["bbox"])
                instances.append(GtInstance(ann_id, (x, y, bw, bh), structure, a["segmentation"]))
            images.append(GtImage(image_id, root / im["file_name"], int(im["height"]),
                                  int(im["width"]), str(record["dataset"]), spacing_of(im),
                                  tuple(instances)))
    if split is not None and n_filtered == 0:
        seen = sorted(str(s) for s in splits_seen)
        raise ValueError(f"no image of {data} has split {split!r}; splits present: {seen}")
    if not images:
        raise ValueError(f"{data} (split {split!r}) holds no image with an instance to evaluate")
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        if max_images < len(images):
            keep = np.sort(np.random.default_rng(seed).choice(len(images), max_images,
                                                              replace=False))
            images = [images[i] for i in keep]
            ids = {im.image_id for im in images}
            gt_images = [r for r in gt_images if r["id"] in ids]
            gt_anns = [a for a in gt_anns if a["image_id"] in ids]
    coco_gt = {"info": {"source": str(data), "split": split, "class_agnostic": True},
               "images": gt_images, "annotations": gt_anns, "categories": [dict(OBJECT_CATEGORY)]}
    return GroundTruth(coco_gt, images, n_empty, str(data), split)


def class_agnostic(coco: dict[str, Any]) -> dict[str, Any]:
    """A copy of a COCO dict with every category merged into ``object`` (id 1)."""
    out = copy.deepcopy(coco)
    out["categories"] = [dict(OBJECT_CATEGORY)]
    for a in out["annotations"]:
        a["category_id"] = OBJECT_CATEGORY["id"]
        a.setdefault("iscrowd", 0)
    return out


def _quiet_coco(gt: dict[str, Any]) -> Any:
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        c = COCO()
        c.dataset = copy.deepcopy(gt)
        c.createIndex()
    return c


def coco_map(gt: dict[str, Any], results: Sequence[dict[str, Any]],
             image_ids: Sequence[int] | None = None) -> dict[str, float | None]:
    """COCO ``segm`` mAP of ``results`` against the class-agnostic ``gt`` (pycocotools' defaults).

    ``image_ids``: restrict the evaluation to these images (e.g. one dataset). Returns
    ``segm_mAP`` (IoU 0.50:0.95), ``segm_mAP_50``, ``segm_mAP_75``; None where pycocotools has
    nothing to score (no ground truth). No result at all scores 0.
    """
    from pycocotools.cocoeval import COCOeval

    if any(int(c["id"]) != OBJECT_CATEGORY["id"] for c in gt["categories"]):
        raise ValueError("coco_map expects a class-agnostic ground truth (see class_agnostic)")
    if not gt["annotations"]:
        return {"segm_mAP": None, "segm_mAP_50": None, "segm_mAP_75": None}
    if not results:
        return {"segm_mAP": 0.0, "segm_mAP_50": 0.0, "segm_mAP_75": 0.0}
    coco_gt = _quiet_coco(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        # loadRes adds fields to the records it is given: hand it copies.
        coco_dt = coco_gt.loadRes(copy.deepcopy(list(results)))
        ev = COCOeval(coco_gt, coco_dt, "segm")
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()

    def stat(i: int) -> float | None:
        v = float(ev.stats[i])
        return None if v < 0 else v  # pycocotools writes -1 when nothing could be scored

    return {"segm_mAP": stat(0), "segm_mAP_50": stat(1), "segm_mAP_75": stat(2)}
