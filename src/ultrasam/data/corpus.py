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

The stages live in their own modules: conversion in :mod:`ultrasam.data.corpus_convert`, the
split stage (filter, deduplicate, split, manifest) in :mod:`ultrasam.data.corpus_split`, the
streamed merges in :mod:`ultrasam.data.corpus_merge`, the folder layout in
:mod:`ultrasam.data.corpus_layout`. This module runs them in order (:func:`build_corpus`) and
is where callers import the pipeline from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UnknownNameError
from .corpus_convert import ConversionResult, convert_source
from .corpus_layout import ANNOTATIONS, LODO_DIR, discover_datasets
from .corpus_split import split_corpus
from .filters import MIN_AREA_MM2, MIN_FRACTION
from .manifest import warning_record
from .progress import progress_bar
from .selection import norm_name
from .sources._base import Source

log = logging.getLogger(__name__)

__all__ = ["ANNOTATIONS", "LODO_DIR", "BuildFailed", "ConversionResult", "build_corpus",
           "convert_source", "discover_datasets", "split_corpus"]


def _resolver(sources: Sequence[Source] | None):  # type: ignore[no-untyped-def]
    """name -> Source, by the registry's rule (case and punctuation ignored, aliases included)."""
    if sources is None:
        from .registry import get_source
        return get_source

    table = {norm_name(n): s for s in sources for n in (s.spec.name, *s.spec.aliases)}

    def get(name: str) -> Source:
        try:
            return table[norm_name(name)]
        except KeyError:
            raise UnknownNameError(f"no dataset source named {name!r}; known: "
                                   f"{', '.join(s.spec.name for s in sources)}") from None
    return get


class BuildFailed(ValueError):
    """No requested dataset converted anything; ``results`` say why, dataset by dataset."""

    def __init__(self, message: str, results: list[ConversionResult]) -> None:
        super().__init__(message)
        self.results = results


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
            warnings.append(warning_record("build", folder.name, folder.name,
                                           "folder matches no registered source; skipped"))
            log.warning("skipping %s: no source of that name or alias", folder.name)
            continue
        name = source.spec.name
        if wanted is not None and name not in wanted:
            continue
        if name in jobs:
            warnings.append(warning_record(
                "build", name, folder.name,
                f"second folder for {name} (first: {jobs[name][1].name}); skipped"))
            continue
        jobs[name] = (source, folder)
    if not jobs:
        raise ValueError(f"no folder of {sources_dir} matches a registered source"
                         + (f" among {sorted(wanted)}" if wanted else ""))
    for name in sorted((wanted or set()) - set(jobs)):
        results.append(ConversionResult(name, "", status="failed",
                                        error=f"no folder for {name} in {sources_dir}"))
        warnings.append(warning_record("build", name, "", results[-1].error or ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    rule = {"min_fraction": float(split_options.get("min_fraction", MIN_FRACTION)),
            "min_area_mm2": float(split_options.get("min_area_mm2", MIN_AREA_MM2))}
    for name in progress_bar(sorted(jobs), progress, desc="convert", unit="dataset"):
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

