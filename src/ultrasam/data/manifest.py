"""``manifest.json``: what a corpus holds, where it came from, and how to check its bytes.

Layout (sorted keys, no timestamps, so the same inputs give the same bytes)::

    format        "ultrasam-corpus-manifest/1"
    seed, parameters   split seed, fractions, filter and duplicate thresholds
    datasets      {dataset: {images, instances, structures: {name: n}, splits: {s: images},
                   fractions: {requested: {s: f}, achieved: {s: f}},
                   official_splits: {s: images}, licence, url, citation}}
    conversion    {dataset: {folder, status (ok / failed / empty), images, instances, skipped,
                   warnings, dropped: {rule: instances}, error}}   (only for ``data build``)
    structures    {structure: instances}            (over the whole corpus, after filtering)
    splits        {split: {images, instances, datasets: {dataset: images}}}
    lodo          {dataset: {images, instances, excluded_duplicates}}
    licences      {dataset: licence text as stated by its source}
    filter        the small-component rule and every drop: per dataset, structure and rule
                  (the converters' own overlay rules included)
    duplicates    the near-duplicate report, with the links the split-unit bound refused
    warnings      [{stage, dataset, file, message}]   conversion + build + filter + dedup + split
    warning_counts {stage: n}
    files         {path relative to the output folder: sha256}  (every output file but this one)
    input_files   {path relative to the input corpus: sha256}   (only when written elsewhere)
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

from .coco import write_json

FORMAT = "ultrasam-corpus-manifest/1"
MANIFEST_NAME = "manifest.json"


def warning_record(stage: str, dataset: str, file: str, message: str) -> dict[str, str]:
    """One row of the manifest's ``warnings`` list."""
    return {"stage": stage, "dataset": dataset, "file": file, "message": message}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_tree(root: Path, paths: list[Path] | None = None,
              exclude: tuple[str, ...] = (MANIFEST_NAME,)) -> dict[str, str]:
    """{posix path relative to ``root``: sha256} for ``paths`` (default: every file under root)."""
    root = Path(root)
    files = paths if paths is not None else [p for p in root.rglob("*") if p.is_file()]
    out = {}
    for p in files:
        rel = Path(p).relative_to(root).as_posix()
        if rel not in exclude:
            out[rel] = sha256_file(Path(p))
    return dict(sorted(out.items()))


def write_manifest(
    path: Path,
    *,
    seed: int,
    parameters: dict[str, Any],
    datasets: dict[str, dict[str, Any]],
    splits: dict[str, dict[str, Any]],
    lodo: dict[str, dict[str, Any]],
    filter_report: dict[str, Any],
    duplicates: dict[str, Any],
    warnings: list[dict[str, str]],
    files: dict[str, str],
    input_files: dict[str, str] | None = None,
    conversion: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Assemble and write the manifest; returns it."""
    structures: Counter[str] = Counter()
    for info in datasets.values():
        structures.update(info.get("structures", {}))
    warnings = sorted(warnings, key=lambda w: (w.get("stage", ""), w.get("dataset", ""),
                                               w.get("file", ""), w.get("message", "")))
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "seed": seed,
        "parameters": parameters,
        "datasets": datasets,
        "structures": dict(sorted(structures.items())),
        "splits": splits,
        "lodo": lodo,
        "licences": {name: info.get("licence") for name, info in sorted(datasets.items())},
        "filter": filter_report,
        "duplicates": duplicates,
        "warnings": warnings,
        "warning_counts": dict(sorted(Counter(w.get("stage", "?") for w in warnings).items())),
        "files": files,
    }
    if input_files is not None:
        manifest["input_files"] = input_files
    if conversion is not None:
        manifest["conversion"] = dict(sorted(conversion.items()))
    write_json(Path(path), manifest)
    return manifest


def format_conversion_table(conversion: dict[str, dict[str, Any]]) -> str:
    """The per-dataset summary of a build as a plain-text table (one row per dataset)."""
    head = ("dataset", "status", "images", "instances", "skipped", "dropped by rule")
    rows = [head]
    for name, r in sorted(conversion.items()):
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(r.get("dropped", {}).items())) or "-"
        rows.append((name, str(r.get("status")), str(r.get("images", 0)),
                     str(r.get("instances", 0)), str(r.get("skipped", 0)), dropped))
    widths = [max(len(row[k]) for row in rows) for k in range(len(head))]
    lines = ["  ".join(c.ljust(w) if k in (0, 1, 5) else c.rjust(w)
                       for k, (c, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    failures = [f"{name}: {r['error']}" for name, r in sorted(conversion.items())
                if r.get("status") != "ok"]
    return "\n".join(lines + failures)


def failed_datasets(conversion: dict[str, dict[str, Any]]) -> list[str]:
    """Datasets of a build that failed or converted nothing (``data build`` exits non-zero)."""
    return sorted(n for n, r in conversion.items()
                  if r.get("status") != "ok" or not r.get("images"))
