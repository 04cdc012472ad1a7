"""Group-aware, seeded, leakage-free train/val/test assignment.

Rules, in order of precedence:

1. **Official splits win.** An image whose dataset assigns it a split (``split`` field, already
   mapped to train/val/test) keeps it. Official val/test are never moved into train.
2. **Split groups.** Images are joined into split units by a union-find over
   (a) their ``group`` (patient / subject / recording / volume) within their dataset;
   (b) sequential frames where no group is known: images carrying a ``frame`` index, and the
       images of sequential-frame datasets (``SEQUENTIAL_FRAME_DATASETS``, e.g. TG3K, whose
       frame number is the last run of digits in ``source``), are grouped in blocks of
       ``FRAME_BLOCK`` = 50 consecutive frame numbers (``frame // 50``);
   (c) near-duplicate links (:mod:`ultrasam.data.dedup`), within and across datasets, taken
       closest first (Hamming distance, then index) and **bounded**: a link joins two units
       only while the joined unit holds at most ``max(FRAME_BLOCK, MAX_UNIT_FRACTION * n)``
       images (2 % of ``n``, the smaller of the two datasets' image counts). Without the bound,
       chains of near-identical neighbouring frames join whole videos into one unit (TG3K's
       3,585 frames collapsed into 3 units, so no val split was possible). Links refused by the
       bound are counted and reported (with how many of them end up across splits): they are
       the price of meeting the split fractions. Groups of (a) and (b) are never cut, whatever
       their size;
   (d) otherwise each image is its own unit.
3. A unit that holds officially split images drags its non-official members to the most
   held-out official split among them (test > val > train), so duplicates of an official test
   image never train. A unit whose members carry *different* official splits straddles them:
   the official splits are kept and the straddle is reported.
4. The remaining units are assigned per dataset (the dataset of the unit's smallest key): units
   are ordered by ``sha256(f"{seed}|{unit key}")`` and laid along the cumulative image count;
   a unit goes to the split whose fraction interval holds its midpoint. Default fractions
   ``DEFAULT_FRACTIONS`` = train 0.8 / val 0.1 / test 0.1. For a dataset that officially defines
   some splits, its unassigned images are spread over the splits it does not define (fractions
   renormalised; all three if it defines all). The result depends only on the seed and the image
   keys, not on input order, and adding a dataset does not move another dataset's images.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from .dedup import UnionFind

SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
FRAME_BLOCK = 50
MAX_UNIT_FRACTION = 0.02
SEQUENTIAL_FRAME_DATASETS: tuple[str, ...] = ("TG3K",)
_HOLDOUT_PRIORITY = {"test": 0, "val": 1, "train": 2}
_DIGITS = re.compile(r"(\d+)(?!.*\d)")


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


@dataclass(frozen=True)
class ImageKey:
    """What the splitter needs to know about one image."""

    dataset: str
    image_id: int
    group: str | None = None
    official_split: str | None = None
    frame: int | None = None
    source: str | None = None


def frame_number(image: ImageKey, sequential: tuple[str, ...] = SEQUENTIAL_FRAME_DATASETS) -> int | None:
    """The image's frame index: its ``frame`` field, or for sequential-frame datasets the last
    run of digits in the file name of ``source`` (e.g. ``train/0123.jpg`` -> 123)."""
    if image.frame is not None:
        return int(image.frame)
    if image.source and _norm(image.dataset) in {_norm(s) for s in sequential}:
        match = _DIGITS.search(image.source.replace("\\", "/").rsplit("/", 1)[-1])
        if match:
            return int(match.group(1))
    return None


def base_group(image: ImageKey, sequential: tuple[str, ...] = SEQUENTIAL_FRAME_DATASETS,
               block: int = FRAME_BLOCK) -> str:
    """The image's own grouping key before duplicates are merged (see the module rules)."""
    if image.group is not None and str(image.group) != "":
        return f"{image.dataset}/group:{image.group}"
    frame = frame_number(image, sequential)
    if frame is not None:
        return f"{image.dataset}/frames:{frame // block}"
    return f"{image.dataset}/image:{image.image_id}"


@dataclass
class SplitResult:
    """Per-image split and split-unit key (same order as the input), plus the report."""

    splits: list[str]
    units: list[str]
    warnings: list[dict[str, str]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    #: near-duplicate index pairs the unit-size bound kept apart (see rule 2c).
    refused_links: list[tuple[int, int]] = field(default_factory=list)

    def refused_report(self, images: list[ImageKey]) -> dict[str, dict[str, int]]:
        """{dataset (or "A|B" across datasets): {refused, across_splits}}."""
        out: dict[str, dict[str, int]] = {}
        for i, j in self.refused_links:
            key = "|".join(sorted({images[i].dataset, images[j].dataset}))
            row = out.setdefault(key, {"refused": 0, "across_splits": 0})
            row["refused"] += 1
            row["across_splits"] += int(self.splits[i] != self.splits[j])
        return dict(sorted(out.items()))


def _check_fractions(fractions: dict[str, float]) -> None:
    if set(fractions) != set(SPLITS) or any(v < 0 for v in fractions.values()):
        raise ValueError(f"fractions must give non-negative train/val/test, got {fractions}")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions}")


def _dataset_fractions(defined: set[str], fractions: dict[str, float]) -> dict[str, float]:
    free = {s: fractions[s] for s in SPLITS if s not in defined and fractions[s] > 0}
    if not defined or not free:
        return fractions
    total = sum(free.values())
    return {s: free.get(s, 0.0) / total for s in SPLITS}


def _order_key(seed: int, unit: str) -> str:
    return hashlib.sha256(f"{seed}|{unit}".encode()).hexdigest()


def assign_splits(
    images: list[ImageKey],
    duplicate_pairs: list[tuple[int, int]] = (),  # type: ignore[assignment]
    seed: int = 0,
    fractions: dict[str, float] | None = None,
    sequential: tuple[str, ...] = SEQUENTIAL_FRAME_DATASETS,
    block: int = FRAME_BLOCK,
    distances: list[int] | None = None,
    max_unit_fraction: float = MAX_UNIT_FRACTION,
) -> SplitResult:
    """Assign every image to train/val/test (see the module rules).

    ``duplicate_pairs``: index pairs into ``images`` that are near-duplicates; ``distances``:
    their Hamming distances (same order; closest links are taken first), default all equal.
    """
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    _check_fractions(fractions)
    if block < 1:
        raise ValueError(f"frame block must be >= 1, got {block}")
    n = len(images)
    for im in images:
        if im.official_split is not None and im.official_split not in SPLITS:
            raise ValueError(f"{im.dataset}/{im.image_id}: split {im.official_split!r} is not one "
                             f"of {SPLITS}")
    bases = [base_group(im, sequential, block) for im in images]
    uf = UnionFind(n)
    first_of: dict[str, int] = {}
    for i, b in enumerate(bases):
        if b in first_of:
            uf.union(first_of[b], i)
        else:
            first_of[b] = i
    if not 0 < max_unit_fraction <= 1:
        raise ValueError(f"max_unit_fraction must be in (0, 1], got {max_unit_fraction}")
    pairs = list(duplicate_pairs)
    if distances is not None and len(distances) != len(pairs):
        raise ValueError(f"{len(pairs)} duplicate pairs but {len(distances)} distances")
    dist = list(distances) if distances is not None else [0] * len(pairs)
    per_dataset: dict[str, int] = defaultdict(int)
    for im in images:
        per_dataset[im.dataset] += 1
    size: dict[int, int] = defaultdict(int)
    for i in range(n):
        size[uf.find(i)] += 1
    refused: list[tuple[int, int]] = []
    for d, i, j in sorted((d, min(i, j), max(i, j)) for d, (i, j) in zip(dist, pairs)):
        ri, rj = uf.find(i), uf.find(j)
        if ri == rj:
            continue
        cap = max(block, max_unit_fraction * min(per_dataset[images[i].dataset],
                                                 per_dataset[images[j].dataset]))
        if size[ri] + size[rj] > cap:
            refused.append((i, j))
            continue
        uf.union(ri, rj)
        root = uf.find(ri)  # one of the two roots (the smaller index)
        size[root] += size.pop(rj if root == ri else ri)

    members: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        members[uf.find(i)].append(i)
    unit_key = {root: min(bases[i] for i in m) for root, m in members.items()}

    defined: dict[str, set[str]] = defaultdict(set)
    for im in images:
        if im.official_split:
            defined[im.dataset].add(im.official_split)

    splits: list[str | None] = [im.official_split for im in images]
    warnings: list[dict[str, str]] = []
    free_units: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for root, m in members.items():
        official = {images[i].official_split for i in m if images[i].official_split}
        key = unit_key[root]
        if official:
            if len(official) > 1:
                names = ", ".join(f"{images[i].dataset}/{images[i].image_id}"
                                  f"={images[i].official_split or '-'}" for i in sorted(m)[:20])
                warnings.append({"stage": "split", "dataset": images[min(m)].dataset,
                                 "file": key,
                                 "message": f"split unit of {len(m)} images straddles official "
                                            f"splits {sorted(official)} (official kept): {names}"})
            target = min(official, key=_HOLDOUT_PRIORITY.__getitem__)
            for i in m:
                if splits[i] is None:
                    splits[i] = target
        else:
            free_units[images[min(m, key=lambda i: bases[i])].dataset].append((key, root))

    for dataset in sorted(free_units):
        frac = _dataset_fractions(defined.get(dataset, set()), fractions)
        units = sorted(free_units[dataset], key=lambda u: (_order_key(seed, u[0]), u[0]))
        total = sum(len(members[root]) for _, root in units)
        bounds, acc = [], 0.0
        for s in SPLITS:
            acc += frac[s]
            bounds.append((acc, s))
        done = 0
        for _, root in units:
            size = len(members[root])
            mid = (done + size / 2) / total
            done += size
            # Float rounding can leave the last midpoint at the top bound: last non-empty split.
            target = next((s for b, s in bounds if mid < b and frac[s] > 0),
                          [s for s in SPLITS if frac[s] > 0][-1])
            for i in members[root]:
                splits[i] = target

    params = {"seed": seed, "fractions": fractions, "frame_block": block,
              "sequential_frame_datasets": list(sequential),
              "max_unit_fraction": max_unit_fraction}
    result = SplitResult([str(s) for s in splits], [unit_key[uf.find(i)] for i in range(n)],
                         [], params, sorted(refused))
    for key, row in result.refused_report(images).items():
        warnings.append({"stage": "split", "dataset": key, "file": "",
                         "message": f"{row['refused']} near-duplicate links left unmerged to keep "
                                    f"split units small ({row['across_splits']} of them across "
                                    "splits)"})
    result.warnings = sorted(warnings, key=lambda w: (w["dataset"], w["file"], w["message"]))
    return result
