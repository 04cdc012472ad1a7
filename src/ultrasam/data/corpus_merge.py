"""Merged COCO files streamed from per-(dataset, split) JSON-lines part files.

The split stage writes one images and one annotations part file per dataset and split
(:class:`PartFiles`); :func:`assemble` streams chosen parts into one class-agnostic COCO file,
renumbering ids, so memory holds an id map, never the whole merge.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The one category of a class-agnostic merge (annotations keep their ``structure``).
AGNOSTIC_CATEGORIES = [{"id": 1, "name": "object", "supercategory": "object"}]


def dumps_line(record: dict[str, Any]) -> str:
    """One record as compact JSON with sorted keys (a part-file line; stable bytes)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


@dataclass
class PartFiles:
    """Per-(dataset, split) JSON-lines files of merged image and annotation records."""

    root: Path
    counts: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    def path(self, ds: str, split: str, kind: str) -> Path:
        return self.root / f"{ds}.{split}.{kind}.jsonl"

    def records(self, ds: str, split: str, kind: str) -> Iterator[dict[str, Any]]:
        """The part's records in file order (none when the part was never written)."""
        path = self.path(ds, split, kind)
        if not path.is_file():
            return
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)


def assemble(target: Path, parts: PartFiles, sources: list[tuple[str, str]],
             skip_clusters: set[int], info: dict[str, Any]) -> tuple[int, int, int]:
    """Stream the named parts into one COCO file; returns (images, instances, skipped images)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_images = target.with_name(target.name + ".images.tmp")
    id_maps: dict[tuple[str, str], dict[int, int]] = {}
    n_images = skipped = 0
    with open(tmp_images, "w", encoding="utf-8") as out:
        for key in sources:
            id_maps[key] = {}
            for rec in parts.records(*key, "images"):
                local = rec.pop("id")
                if rec.pop("_cluster") in skip_clusters:
                    skipped += 1
                    continue
                n_images += 1
                id_maps[key][local] = n_images
                out.write(("" if n_images == 1 else ",\n")
                          + dumps_line({**rec, "id": n_images}))
    n_ann = 0
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.write('{"annotations": [\n')
        for key in sources:
            for rec in parts.records(*key, "annotations"):
                image_id = id_maps[key].get(rec["image_id"])
                if image_id is None:
                    continue
                n_ann += 1
                out.write(("" if n_ann == 1 else ",\n")
                          + dumps_line({**rec, "id": n_ann, "image_id": image_id}))
        out.write("\n],\n\"categories\": " + dumps_line(AGNOSTIC_CATEGORIES) + ",\n\"images\": [\n")
        with open(tmp_images, encoding="utf-8") as f:
            shutil.copyfileobj(f, out)
        out.write("\n],\n\"info\": " + dumps_line(info) + "\n}\n")
    tmp_images.unlink()
    tmp.replace(target)
    return n_images, n_ann, skipped

