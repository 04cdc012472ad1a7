"""The corpus builder: convert -> filter -> near-duplicates -> split -> agnostic merge -> manifest.

Output layout (``CORPUS_DIR``)::

    <dataset>/images/<DATASET>__<NNNNN>.png   lossless PNG at native resolution
    <dataset>/annotations.coco.json           file_name relative to images/; split = official or null
    {train,val,test}.coco.json                class-agnostic merges: file_name relative to CORPUS_DIR,
                                              one category "object", images keep dataset / group /
                                              official_split and gain split_group, annotations keep
                                              their original ``structure``
    lodo/<dataset>.train.coco.json            leave-one-dataset-out training sets (train split of
                                              every other dataset, minus near-duplicates of the
                                              held-out dataset's images)
    manifest.json                             see :mod:`ultrasam.data.manifest`

Merged files carry ``info.image_root``: the folder their ``file_name`` values are relative to,
relative to the merged file's own folder ("." for the top-level merges of a built corpus,
".." under ``lodo/``), so readers find the images wherever the merges were written.

Memory stays bounded: images are converted and written one at a time by the sources, the split
stage keeps one small record per image (keys and a 64-bit hash) and one dataset's annotations at
a time, and merged files are assembled by streaming JSON lines from per-dataset part files.
Outputs are byte-identical for the same inputs (sorted keys, sequential ids, seeded hashing).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from ..errors import UnknownNameError
from .coco import CocoWriter, normalise_split, read_coco, write_json
from .dedup import HAMMING_THRESHOLD, find_duplicates, hamming, is_flat, phash_array
from .filters import MIN_AREA_MM2, MIN_FRACTION, FilterReport, filter_annotations
from .manifest import MANIFEST_NAME, hash_tree, write_manifest
from .sources._base import Source
from .splits import (
    DEFAULT_FRACTIONS, FRAME_BLOCK, MAX_UNIT_FRACTION, SEQUENTIAL_FRAME_DATASETS, SPLITS, ImageKey,
    assign_splits,
)

log = logging.getLogger(__name__)

ANNOTATIONS = "annotations.coco.json"
LODO_DIR = "lodo"
AGNOSTIC_CATEGORIES = [{"id": 1, "name": "object", "supercategory": "object"}]
_TMP = ".split-parts.tmp"


def _tqdm(iterable: Iterable[Any], progress: bool, **kw: Any) -> Iterable[Any]:
    if not progress:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # optional dependency: no bar, same work
        return iterable
    return tqdm(iterable, **kw)


def _warning(stage: str, dataset: str, file: str, message: str) -> dict[str, str]:
    return {"stage": stage, "dataset": dataset, "file": file, "message": message}


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def discover_datasets(corpus_dir: Path) -> list[str]:
    """Names of the dataset folders (those holding ``annotations.coco.json``), sorted."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"corpus folder not found: {corpus_dir}")
    return sorted(p.name for p in corpus_dir.iterdir()
                  if p.is_dir() and p.name != LODO_DIR and (p / ANNOTATIONS).is_file())


# --------------------------------------------------------------------------------------------
# Conversion


def _resolver(sources: Sequence[Source] | None):  # type: ignore[no-untyped-def]
    """name -> Source, by the registry's rule (case and punctuation ignored, aliases included)."""
    if sources is None:
        from .registry import get_source
        return get_source

    table = {_key(n): s for s in sources for n in (s.spec.name, *s.spec.aliases)}

    def get(name: str) -> Source:
        try:
            return table[_key(name)]
        except KeyError:
            raise UnknownNameError(f"no dataset source named {name!r}; known: "
                                   f"{', '.join(s.spec.name for s in sources)}") from None
    return get


def _spec_info(source: Source, folder: str) -> dict[str, Any]:
    spec = source.spec
    return {"name": spec.name, "licence": spec.licence, "url": spec.url,
            "citation": spec.citation, "kind": spec.kind, "anatomy": spec.anatomy,
            "native_format": spec.native_format, "us43d": spec.us43d, "native_folder": folder}


class BuildFailed(ValueError):
    """No requested dataset converted anything; ``results`` say why, dataset by dataset."""

    def __init__(self, message: str, results: list[ConversionResult]) -> None:
        super().__init__(message)
        self.results = results


@dataclass
class ConversionResult:
    """What converting one dataset did: the row of ``data build``'s summary table.

    ``status``: "ok"; "failed" (the converter raised, or no folder was found: ``error`` says
    why; what it converted before failing is kept); "empty" (it ran but converted no image).
    ``skipped``: input items left out with a warning; ``dropped``: instances removed, per rule.
    """

    dataset: str
    folder: str
    status: str = "ok"
    images: int = 0
    instances: int = 0
    skipped: int = 0
    warnings: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    report: FilterReport = field(default_factory=FilterReport, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "status": self.status, "images": self.images,
                "instances": self.instances, "skipped": self.skipped,
                "warnings": self.warnings, "dropped": dict(sorted(self.dropped.items())),
                "error": self.error}


def convert_source(source: Source, native_dir: Path, out_dir: Path, *,
                   min_fraction: float = MIN_FRACTION, min_area_mm2: float = MIN_AREA_MM2
                   ) -> tuple[ConversionResult, list[dict[str, str]]]:
    """Convert one source's native tree into ``out_dir/<name>/``; returns (result, warnings).

    The dataset folder is replaced. A converter that raises is reported by name and cause
    (status "failed", stage "build" warning) and what it converted before failing is kept. The
    small-component filter is applied before the annotations file is written (annotation ids
    renumbered sequentially); its drops and the converter's own (burnt-in marks) are counted in
    ``result.report``.
    """
    name = source.spec.name
    target = Path(out_dir) / name
    if target.exists():
        shutil.rmtree(target)
    writer = CocoWriter(dataset=name, structures=list(source.spec.structures),
                        images_dir=target / "images", info=_spec_info(source, native_dir.name))
    result = ConversionResult(name, native_dir.name,
                              report=FilterReport(min_fraction, min_area_mm2))
    warnings: list[dict[str, str]] = []
    try:
        source.convert(Path(native_dir), writer)
    except Exception as e:  # one broken dataset must not stop the others; it is reported
        log.error("%s: converter failed: %s: %s", name, type(e).__name__, e,
                  exc_info=log.isEnabledFor(logging.DEBUG))
        result.status = "failed"
        result.error = (f"converter failed after {len(writer.images)} images: "
                        f"{type(e).__name__}: {e}")
        warnings.append(_warning("build", name, native_dir.name, result.error))
    result.skipped, result.warnings = writer.skipped, len(writer.warnings)
    result.report.add_source_drops(name, writer.dropped)
    if not writer.images:
        # No annotations file will carry the converter's warnings: report them here.
        warnings += [_warning("convert", name, w.file, w.message) for w in writer.warnings]
        if result.ok:
            result.status = "empty"
            result.error = "no images converted" + (
                f" ({writer.skipped} items skipped with a warning)" if writer.skipped else
                ": no file of the expected layout found")
            warnings.append(_warning("build", name, native_dir.name, result.error))
        shutil.rmtree(target, ignore_errors=True)
        result.dropped = dict(result.report.dropped_per_rule)
        return result, warnings
    kept = filter_annotations(writer.images, writer.annotations, name, result.report)
    coco = writer.to_coco()
    coco["annotations"] = [{**a, "id": k} for k, a in enumerate(kept, start=1)]
    write_json(target / ANNOTATIONS, coco)
    result.images, result.instances = len(writer.images), len(kept)
    result.dropped = dict(result.report.dropped_per_rule)
    return result, warnings


def _failure_summary(results: list[ConversionResult]) -> str:
    return "; ".join(f"{r.dataset} ({r.folder}): {r.error}" for r in results if not r.ok)


def build_corpus(
    sources_dir: Path,
    out_dir: Path,
    only: Sequence[str] | None = None,
    seed: int = 0,
    *,
    sources: Sequence[Source] | None = None,
    progress: bool = True,
    **split_options: Any,
) -> dict[str, Any]:
    """Convert every recognised folder of ``sources_dir`` into ``out_dir``, then split it.

    ``sources_dir`` holds one folder per dataset, named by a source's name or alias (matched by
    :func:`ultrasam.data.registry.get_source`, or among ``sources`` when given). Unknown folders
    are skipped with a warning. ``only``: source names/aliases to restrict to. Returns the
    manifest (also written to ``out_dir/manifest.json``); ``split_options`` go to
    :func:`split_corpus`.
    """
    sources_dir, out_dir = Path(sources_dir), Path(out_dir)
    if not sources_dir.is_dir():
        raise FileNotFoundError(f"sources folder not found: {sources_dir}")
    resolve = _resolver(sources)
    wanted = {resolve(n).spec.name for n in only} if only else None
    results: list[ConversionResult] = []
    warnings: list[dict[str, str]] = []
    jobs: dict[str, tuple[Source, Path]] = {}
    for folder in sorted(p for p in sources_dir.iterdir() if p.is_dir()):
        try:
            source = resolve(folder.name)
        except KeyError:
            warnings.append(_warning("build", folder.name, folder.name,
                                     "folder matches no registered source; skipped"))
            log.warning("skipping %s: no source of that name or alias", folder.name)
            continue
        name = source.spec.name
        if wanted is not None and name not in wanted:
            continue
        if name in jobs:
            warnings.append(_warning("build", name, folder.name,
                                     f"second folder for {name} (first: {jobs[name][1].name}); "
                                     "skipped"))
            continue
        jobs[name] = (source, folder)
    if not jobs:
        raise ValueError(f"no folder of {sources_dir} matches a registered source"
                         + (f" among {sorted(wanted)}" if wanted else ""))
    for name in sorted((wanted or set()) - set(jobs)):
        results.append(ConversionResult(name, "", status="failed",
                                        error=f"no folder for {name} in {sources_dir}"))
        warnings.append(_warning("build", name, "", results[-1].error or ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    rule = {"min_fraction": float(split_options.get("min_fraction", MIN_FRACTION)),
            "min_area_mm2": float(split_options.get("min_area_mm2", MIN_AREA_MM2))}
    for name in _tqdm(sorted(jobs), progress, desc="convert", unit="dataset"):
        source, folder = jobs[name]
        log.info("converting %s from %s", name, folder)
        result, w = convert_source(source, folder, out_dir, **rule)
        log.info("%s: %d images, %d instances, %d skipped", name, result.images,
                 result.instances, result.skipped)
        results.append(result)
        warnings.extend(w)
    results.sort(key=lambda r: r.dataset)
    if not any(r.images for r in results):
        raise BuildFailed("no requested dataset converted any image: "
                          + _failure_summary(results), results)
    return split_corpus(out_dir, out_dir, seed, extra_warnings=warnings, progress=progress,
                        conversion=results, **split_options)


# --------------------------------------------------------------------------------------------
# Split, merge, manifest


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
            scan.warnings.append(_warning("split", ds, f"{ds}/{ANNOTATIONS}", f"skipped: {e}"))
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
            scan.warnings.append(_warning("convert", ds, str(w.get("file", "")),
                                          str(w.get("message", ""))))
        for im in _tqdm(sorted(coco["images"], key=lambda r: r.get("id", 0)), progress,
                        desc=f"hash {ds}", unit="img", leave=False):
            problem, official, h = None, None, None
            try:
                image_id, file_name = int(im["id"]), str(im["file_name"])
                width, height = int(im["width"]), int(im["height"])
            except (KeyError, TypeError, ValueError) as e:
                scan.warnings.append(_warning("split", ds, str(im.get("file_name", "?")),
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
                scan.warnings.append(_warning("split", ds, file_name, f"{e}; treated as null"))
            if problem:
                scan.warnings.append(_warning("split", ds, file_name, f"{problem}; skipped"))
                scan.excluded[ds].add(image_id)
                continue
            frame = im.get("frame")
            scan.keys.append(ImageKey(ds, image_id, None if im.get("group") is None
                                      else str(im["group"]), official,
                                      None if frame is None else int(frame), im.get("source")))
            scan.hashes.append(h)
    return scan


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


@dataclass
class _Parts:
    """Per-(dataset, split) JSON-lines files of merged image and annotation records."""

    root: Path
    counts: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    def path(self, ds: str, split: str, kind: str) -> Path:
        return self.root / f"{ds}.{split}.{kind}.jsonl"


def _emit(corpus: Path, names: list[str], scan: _Scan, assignment: dict[tuple[str, int], tuple],
          parts: _Parts, report: FilterReport, progress: bool
          ) -> tuple[dict[str, dict[str, Any]], list[dict[str, str]]]:
    """Write the part files; returns per-dataset counts and annotation warnings."""
    stats: dict[str, dict[str, Any]] = {}
    warnings: list[dict[str, str]] = []
    for ds in _tqdm(names, progress, desc="merge", unit="dataset"):
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
                warnings.append(_warning("split", ds, f"annotation {a.get('id')}",
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
                handle(split, "images").write(_dumps(record) + "\n")
                split_images[split] += 1
                if official_split:
                    official[official_split] += 1
                for a in sorted(by_image.get(im["id"], []), key=lambda r: r["id"]):
                    h, w = a.get("segmentation", {}).get("size", [im["height"], im["width"]])
                    if (h, w) != (im["height"], im["width"]):
                        warnings.append(_warning("split", ds, im["file_name"],
                                                 f"annotation {a['id']} mask is {w}x{h}; "
                                                 "skipped"))
                        continue
                    structure = a.get("structure") or structure_of[a["category_id"]]
                    structures[structure] += 1
                    handle(split, "annotations").write(_dumps(
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


def _fraction_report(stats: dict[str, dict[str, Any]], fractions: dict[str, float]
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
                warnings.append(_warning(
                    "split", ds, "", f"split {s!r} is empty (requested {fractions[s]:g}; "
                    f"achieved {', '.join(f'{k} {v}' for k, v in st['splits'].items())} images)"
                    + why))
    return warnings


def _assemble(target: Path, parts: _Parts, sources: list[tuple[str, str]],
              skip_clusters: set[int], info: dict[str, Any]) -> tuple[int, int, int]:
    """Stream the named parts into one COCO file; returns (images, instances, skipped images)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_images = target.with_name(target.name + ".images.tmp")
    id_maps: dict[tuple[str, str], dict[int, int]] = {}
    n_images = skipped = 0
    with open(tmp_images, "w", encoding="utf-8") as out:
        for key in sources:
            id_maps[key] = {}
            path = parts.path(*key, "images")
            if not path.is_file():
                continue
            with open(path, encoding="utf-8") as f:
                for line in f:
                    rec = json.loads(line)
                    local = rec.pop("id")
                    if rec.pop("_cluster") in skip_clusters:
                        skipped += 1
                        continue
                    n_images += 1
                    id_maps[key][local] = n_images
                    out.write(("" if n_images == 1 else ",\n") + _dumps({**rec, "id": n_images}))
    n_ann = 0
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.write('{"annotations": [\n')
        for key in sources:
            path = parts.path(*key, "annotations")
            if not path.is_file():
                continue
            with open(path, encoding="utf-8") as f:
                for line in f:
                    rec = json.loads(line)
                    image_id = id_maps[key].get(rec["image_id"])
                    if image_id is None:
                        continue
                    n_ann += 1
                    out.write(("" if n_ann == 1 else ",\n")
                              + _dumps({**rec, "id": n_ann, "image_id": image_id}))
        out.write("\n],\n\"categories\": " + _dumps(AGNOSTIC_CATEGORIES) + ",\n\"images\": [\n")
        with open(tmp_images, encoding="utf-8") as f:
            shutil.copyfileobj(f, out)
        out.write("\n],\n\"info\": " + _dumps(info) + "\n}\n")
    tmp_images.unlink()
    tmp.replace(target)
    return n_images, n_ann, skipped


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

    parts = _Parts(out / _TMP)
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
            n_im, n_ann, _ = _assemble(target, parts, [(d, split) for d in done], set(),
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
            n_im, n_ann, skipped = _assemble(
                target, parts, [(d, "train") for d in done if d != held], clusters_of[held],
                {**common, "split": "train", "held_out": held, "image_root": lodo_root})
            lodo_stats[held] = {"images": n_im, "instances": n_ann,
                                "excluded_duplicates": skipped}
            written.append(target)
    finally:
        shutil.rmtree(parts.root, ignore_errors=True)

    warnings = list(extra_warnings or []) + scan.warnings + result.warnings + emit_warnings
    for ds, n in sorted(report.dropped_per_dataset.items()):
        warnings.append(_warning("filter", ds, ANNOTATIONS,
                                 f"dropped {n} components under the small-component threshold"))
    warnings += _fraction_report(stats, fractions)
    for r in conversion or []:
        report.merge(r.report)
    dup = dedup.report()
    dup["refused_links"] = result.refused_report(scan.keys)
    dup["max_unit_fraction"] = max_unit_fraction
    for pair, n in dup["pairs_across_datasets"].items():
        warnings.append(_warning("dedup", pair, "", f"{n} near-duplicate image pairs across "
                                                    "datasets (kept on one side of the split)"))
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
