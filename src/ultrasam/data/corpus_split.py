"""The split stage: filter, deduplicate, split, merge and write the manifest of a corpus.

Reads ``<dataset>/annotations.coco.json`` files (never modifies them); see
:mod:`ultrasam.data.corpus` for the output layout. Steps: scan every image (keys and a
perceptual hash), find near-duplicates, assign group-aware seeded splits, write per-dataset
part files (:mod:`ultrasam.data.corpus_merge`), assemble the merges and ``lodo/`` sets, then
the manifest.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from .coco import normalise_split, read_coco
from .corpus_convert import ConversionResult
from .corpus_layout import ANNOTATIONS, LODO_DIR, discover_datasets
from .corpus_merge import PartFiles, assemble, dumps_line
from .dedup import HAMMING_THRESHOLD, find_duplicates, hamming, is_flat, phash_array
from .filters import MIN_AREA_MM2, MIN_FRACTION, FilterReport, filter_annotations
from .manifest import MANIFEST_NAME, hash_tree, warning_record, write_manifest
from .progress import progress_bar
from .splits import (
    DEFAULT_FRACTIONS, FRAME_BLOCK, MAX_UNIT_FRACTION, SEQUENTIAL_FRAME_DATASETS, SPLITS, ImageKey,
    assign_splits,
)

log = logging.getLogger(__name__)

_TMP = ".split-parts.tmp"


@dataclass
class _Scan:
    """One small record per usable image, in (dataset, image id) order."""

    keys: list[ImageKey] = field(default_factory=list)
    hashes: list[int | None] = field(default_factory=list)
    excluded: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    unreadable_datasets: set[str] = field(default_factory=set)
    dataset_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[dict[str, str]] = field(default_factory=list)


def _licence_from_registry(dataset: str) -> dict[str, Any]:
    try:
        from .registry import get_source
        spec = get_source(dataset).spec
    except (KeyError, ImportError):  # unknown dataset or sources not installed: nothing stated
        return {}
    return {"licence": spec.licence, "url": spec.url, "citation": spec.citation}


def _scan(corpus: Path, names: list[str], progress: bool) -> _Scan:
    scan = _Scan()
    for ds in names:
        path = corpus / ds / ANNOTATIONS
        try:
            coco = read_coco(path)
        except ValueError as e:
            scan.warnings.append(warning_record("split", ds, f"{ds}/{ANNOTATIONS}",
                                                f"skipped: {e}"))
            scan.unreadable_datasets.add(ds)
            continue
        info = coco.get("info") or {}
        stated = _licence_from_registry(ds)
        scan.dataset_info[ds] = {
            "licence": info.get("licence") or info.get("license") or stated.get("licence"),
            "url": info.get("url") or stated.get("url"),
            "citation": info.get("citation") or info.get("upstream") or stated.get("citation"),
        }
        for w in coco.get("warnings") or []:
            scan.warnings.append(warning_record("convert", ds, str(w.get("file", "")),
                                                str(w.get("message", ""))))
        for im in progress_bar(sorted(coco["images"], key=lambda r: r.get("id", 0)), progress,
                               desc=f"hash {ds}", unit="img", leave=False):
            problem, official, h = None, None, None
            try:
                image_id, file_name = int(im["id"]), str(im["file_name"])
                width, height = int(im["width"]), int(im["height"])
            except (KeyError, TypeError, ValueError) as e:
                scan.warnings.append(warning_record("split", ds, str(im.get("file_name", "?")),
                                                    f"malformed image record ({e}); skipped"))
                if "id" in im:
                    scan.excluded[ds].add(im["id"])
                continue
            file = corpus / ds / "images" / file_name
            data = np.fromfile(str(file), dtype=np.uint8) if file.is_file() else None
            gray = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data is not None and data.size \
                else None
            if data is None:
                problem = "missing image file"
            elif gray is None:
                problem = "unreadable image"
            elif gray.shape != (height, width):
                problem = f"image is {gray.shape[1]}x{gray.shape[0]}, record says {width}x{height}"
            elif not is_flat(gray):
                h = phash_array(gray)
            try:
                official = normalise_split(im.get("split"))
            except ValueError as e:
                scan.warnings.append(warning_record("split", ds, file_name,
                                                    f"{e}; treated as null"))
            if problem:
                scan.warnings.append(warning_record("split", ds, file_name, f"{problem}; skipped"))
                scan.excluded[ds].add(image_id)
                continue
            frame = im.get("frame")
            scan.keys.append(ImageKey(ds, image_id, None if im.get("group") is None
                                      else str(im["group"]), official,
                                      None if frame is None else int(frame), im.get("source")))
            scan.hashes.append(h)
    return scan


def _emit(corpus: Path, names: list[str], scan: _Scan, assignment: dict[tuple[str, int], tuple],
          parts: PartFiles, report: FilterReport, progress: bool
          ) -> tuple[dict[str, dict[str, Any]], list[dict[str, str]]]:
    """Write the part files; returns per-dataset counts and annotation warnings."""
    stats: dict[str, dict[str, Any]] = {}
    warnings: list[dict[str, str]] = []
    for ds in progress_bar(names, progress, desc="merge", unit="dataset"):
        if ds in scan.unreadable_datasets:
            continue
        coco = read_coco(corpus / ds / ANNOTATIONS)
        structure_of = {c["id"]: c["name"] for c in coco["categories"]}
        images = [im for im in coco["images"] if (ds, im.get("id")) in assignment]
        images.sort(key=lambda r: r["id"])
        annotations = []
        for a in coco["annotations"]:
            if (ds, a.get("image_id")) not in assignment:
                continue
            if a.get("category_id") not in structure_of and not a.get("structure"):
                warnings.append(warning_record("split", ds, f"annotation {a.get('id')}",
                                               f"unknown category {a.get('category_id')}; skipped"))
                continue
            annotations.append(a)
        annotations = filter_annotations(images, annotations, ds, report, structure_of)
        by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for a in annotations:
            by_image[a["image_id"]].append(a)
        structures: Counter[str] = Counter({n: 0 for n in structure_of.values()})
        split_images: Counter[str] = Counter()
        official: Counter[str] = Counter()
        handles: dict[tuple[str, str], IO[str]] = {}

        def handle(split: str, kind: str) -> IO[str]:
            if (split, kind) not in handles:
                handles[(split, kind)] = open(parts.path(ds, split, kind), "w", encoding="utf-8")
            return handles[(split, kind)]

        try:
            for im in images:
                split, unit, cluster, official_split = assignment[(ds, im["id"])]
                parts.counts[(ds, split)] += 1
                local = parts.counts[(ds, split)]
                record = {**im, "id": local, "file_name": f"{ds}/images/{im['file_name']}",
                          "dataset": ds, "split": split, "official_split": official_split,
                          "split_group": unit, "_cluster": cluster}
                handle(split, "images").write(dumps_line(record) + "\n")
                split_images[split] += 1
                if official_split:
                    official[official_split] += 1
                for a in sorted(by_image.get(im["id"], []), key=lambda r: r["id"]):
                    h, w = a.get("segmentation", {}).get("size", [im["height"], im["width"]])
                    if (h, w) != (im["height"], im["width"]):
                        warnings.append(warning_record("split", ds, im["file_name"],
                                                       f"annotation {a['id']} mask is {w}x{h}; "
                                                       "skipped"))
                        continue
                    structure = a.get("structure") or structure_of[a["category_id"]]
                    structures[structure] += 1
                    handle(split, "annotations").write(dumps_line(
                        {**a, "image_id": local, "category_id": 1,
                         "structure": structure}) + "\n")
        finally:
            for f in handles.values():
                f.close()
        stats[ds] = {"images": len(images), "instances": sum(structures.values()),
                     "structures": dict(sorted(structures.items())),
                     "splits": {s: split_images.get(s, 0) for s in SPLITS},
                     "official_splits": dict(sorted(official.items())),
                     "excluded_images": len(scan.excluded.get(ds, set())),
                     **scan.dataset_info.get(ds, {})}
    return stats, warnings


def fraction_report(stats: dict[str, dict[str, Any]], fractions: dict[str, float]
                     ) -> list[dict[str, str]]:
    """Add requested vs achieved split fractions to each dataset's stats; warn per empty split.

    A split is reported empty only when it was requested (fraction > 0) and the dataset has
    images: too few split units (NERVE: 2 subjects), one unit larger than the split, or an
    official split that leaves it out.
    """
    warnings = []
    for ds, st in stats.items():
        total = st["images"]
        st["fractions"] = {
            "requested": {s: fractions[s] for s in SPLITS},
            "achieved": {s: round(st["splits"][s] / total, 4) if total else 0.0 for s in SPLITS},
        }
        official = sum(st["official_splits"].values())
        for s in SPLITS:
            if total and fractions[s] > 0 and st["splits"][s] == 0:
                why = (" (its official split covers every image and names no such split)"
                       if official == total else "")
                warnings.append(warning_record(
                    "split", ds, "", f"split {s!r} is empty (requested {fractions[s]:g}; "
                    f"achieved {', '.join(f'{k} {v}' for k, v in st['splits'].items())} images)"
                    + why))
    return warnings


def split_corpus(
    corpus_dir: Path,
    out_dir: Path | None = None,
    seed: int = 0,
    *,
    fractions: dict[str, float] | None = None,
    hamming_threshold: int = HAMMING_THRESHOLD,
    min_fraction: float = MIN_FRACTION,
    min_area_mm2: float = MIN_AREA_MM2,
    sequential: Sequence[str] = SEQUENTIAL_FRAME_DATASETS,
    frame_block: int = FRAME_BLOCK,
    max_unit_fraction: float = MAX_UNIT_FRACTION,
    extra_warnings: list[dict[str, str]] | None = None,
    conversion: Sequence[ConversionResult] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Filter, deduplicate, split, merge and write the manifest of an existing corpus.

    Reads ``corpus_dir/<dataset>/annotations.coco.json`` (never modifies them) and writes the
    merges, ``lodo/`` and ``manifest.json`` into ``out_dir`` (default: ``corpus_dir``). Works
    on the builder's output and on corpora with the same schema (e.g. the shared corpus, whose
    images are JPEG and whose annotations lack ``structure``). ``conversion``: the builder's
    per-dataset results (manifest ``conversion`` section; their drops join the filter report).
    Returns the manifest.
    """
    corpus = Path(corpus_dir).resolve()
    out = Path(out_dir).resolve() if out_dir is not None else corpus
    names = discover_datasets(corpus)
    if not names:
        raise ValueError(f"{corpus} holds no dataset folder with an {ANNOTATIONS} (expected "
                         f"<dataset>/{ANNOTATIONS}, as written by 'ultrasam data build')")
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    sequential = tuple(sequential)
    out.mkdir(parents=True, exist_ok=True)

    scan = _scan(corpus, names, progress)
    if not scan.keys:
        raise ValueError(f"{corpus}: no readable image in any dataset")
    dedup = find_duplicates([(k.dataset, k.image_id) for k in scan.keys], scan.hashes,
                            hamming_threshold)
    distances = [hamming(scan.hashes[i] or 0, scan.hashes[j] or 0) for i, j in dedup.pairs]
    result = assign_splits(scan.keys, dedup.pairs, seed, fractions, sequential, frame_block,
                           distances=distances, max_unit_fraction=max_unit_fraction)
    assignment = {(k.dataset, k.image_id): (result.splits[i], result.units[i],
                                            dedup.cluster_of[i], k.official_split)
                  for i, k in enumerate(scan.keys)}

    parts = PartFiles(out / _TMP)
    shutil.rmtree(parts.root, ignore_errors=True)
    parts.root.mkdir()
    report = FilterReport(min_fraction, min_area_mm2)
    try:
        stats, emit_warnings = _emit(corpus, names, scan, assignment, parts, report, progress)
        done = sorted(stats)
        image_root = Path(os.path.relpath(corpus, out)).as_posix()
        common = {"seed": seed, "schema": "class-agnostic merge; file_name relative to image_root",
                  "datasets": done}
        split_stats: dict[str, dict[str, Any]] = {}
        written: list[Path] = []
        for split in SPLITS:
            target = out / f"{split}.coco.json"
            n_im, n_ann, _ = assemble(target, parts, [(d, split) for d in done], set(),
                                       {**common, "split": split, "image_root": image_root})
            split_stats[split] = {"images": n_im, "instances": n_ann,
                                  "datasets": {d: stats[d]["splits"][split] for d in done}}
            written.append(target)
        lodo_dir = out / LODO_DIR
        if lodo_dir.is_dir():
            for stale in lodo_dir.glob("*.train.coco.json"):
                stale.unlink()
        lodo_root = Path(os.path.relpath(corpus, lodo_dir)).as_posix()
        clusters_of: dict[str, set[int]] = defaultdict(set)
        for i, k in enumerate(scan.keys):
            clusters_of[k.dataset].add(dedup.cluster_of[i])
        lodo_stats = {}
        for held in done:
            target = lodo_dir / f"{held}.train.coco.json"
            n_im, n_ann, skipped = assemble(
                target, parts, [(d, "train") for d in done if d != held], clusters_of[held],
                {**common, "split": "train", "held_out": held, "image_root": lodo_root})
            lodo_stats[held] = {"images": n_im, "instances": n_ann,
                                "excluded_duplicates": skipped}
            written.append(target)
    finally:
        shutil.rmtree(parts.root, ignore_errors=True)

    warnings = list(extra_warnings or []) + scan.warnings + result.warnings + emit_warnings
    for ds, n in sorted(report.dropped_per_dataset.items()):
        warnings.append(warning_record(
            "filter", ds, ANNOTATIONS,
            f"dropped {n} components under the small-component threshold"))
    warnings += fraction_report(stats, fractions)
    for r in conversion or []:
        report.merge(r.report)
    dup = dedup.report()
    dup["refused_links"] = result.refused_report(scan.keys)
    dup["max_unit_fraction"] = max_unit_fraction
    for pair, n in dup["pairs_across_datasets"].items():
        warnings.append(warning_record("dedup", pair, "",
                                       f"{n} near-duplicate image pairs across datasets (kept on "
                                       "one side of the split)"))
    inputs: list[Path] = []
    for ds in done:
        inputs.append(corpus / ds / ANNOTATIONS)
        inputs.extend(sorted(p for p in (corpus / ds / "images").rglob("*") if p.is_file()))
    if out == corpus:
        files, input_files = hash_tree(out, inputs + written), None
    else:
        files, input_files = hash_tree(out, written), hash_tree(corpus, inputs)
    parameters = {
        "fractions": fractions, "hamming_threshold": hamming_threshold,
        "min_fraction": min_fraction, "min_area_mm2": min_area_mm2, "frame_block": frame_block,
        "max_unit_fraction": max_unit_fraction, "sequential_frame_datasets": list(sequential),
    }
    manifest = write_manifest(
        out / MANIFEST_NAME, seed=seed, parameters=parameters, datasets=stats,
        splits=split_stats, lodo=lodo_stats, filter_report=report.as_dict(), duplicates=dup,
        warnings=warnings, files=files, input_files=input_files,
        conversion=None if conversion is None else {r.dataset: r.as_dict() for r in conversion})
    log.info("corpus: %s", {s: v["images"] for s, v in split_stats.items()})
    return manifest
