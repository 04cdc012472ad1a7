"""The conversion stage: one source's native folder -> ``<dataset>/`` (PNG images + COCO file).

The converter itself is the source's own (``ultrasam.data.sources``); this stage gives it a
writer, catches a converter that fails, applies the small-component filter and reports what
happened as a :class:`ConversionResult`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .coco import CocoWriter, write_json
from .corpus_layout import ANNOTATIONS
from .filters import MIN_AREA_MM2, MIN_FRACTION, FilterReport, filter_annotations
from .manifest import warning_record
from .sources._base import Source

log = logging.getLogger(__name__)


def _spec_info(source: Source, folder: str) -> dict[str, Any]:
    spec = source.spec
    return {"name": spec.name, "licence": spec.licence, "url": spec.url,
            "citation": spec.citation, "kind": spec.kind, "anatomy": spec.anatomy,
            "native_format": spec.native_format, "us43d": spec.us43d, "native_folder": folder}


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
        warnings.append(warning_record("build", name, native_dir.name, result.error))
    result.skipped, result.warnings = writer.skipped, len(writer.warnings)
    result.report.add_source_drops(name, writer.dropped)
    if not writer.images:
        # No annotations file will carry the converter's warnings: report them here.
        warnings += [warning_record("convert", name, w.file, w.message) for w in writer.warnings]
        if result.ok:
            result.status = "empty"
            result.error = "no images converted" + (
                f" ({writer.skipped} items skipped with a warning)" if writer.skipped else
                ": no file of the expected layout found")
            warnings.append(warning_record("build", name, native_dir.name, result.error))
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

