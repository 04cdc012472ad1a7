"""Train / validation / test assignment for downstream tasks, group-aware and seeded.

Rules:

1. An official ``test`` split is the test set; an official ``val`` split is the test set too
   when the dataset has no official ``test`` (MMOTU-2D's public split is train / val, and its
   val images are the held-out benchmark): held-out images never train and never steer early
   stopping.
2. Everything else is assigned by :func:`ultrasam.data.splits.assign_splits` (the corpus
   splitter: a patient / subject / recording ``group`` — or a block of sequential frames — is
   one unit that never straddles two splits; seeded by a hash of the unit key), with
   ``fractions`` renormalised over the splits still needed: train / val / test when nothing is
   held out officially, train / val otherwise.
3. :func:`label_fraction` keeps a seeded fraction of the training *groups* (at least one
   group per class), for label-efficiency curves; validation and test are untouched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..data.splits import ImageKey, assign_splits, base_group
from .data import Record

DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _key(r: Record) -> ImageKey:
    return ImageKey(dataset=r.dataset, image_id=r.image_id, group=r.group, source=r.source)


def unit_of(r: Record) -> str:
    """The split unit of a record (its group, frame block or the image itself)."""
    return base_group(_key(r))


def split_records(records: Sequence[Record], seed: int = 0,
                  fractions: dict[str, float] | None = None) -> list[str]:
    """One of train / val / test per record (module docstring has the rules)."""
    fr = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
    if set(fr) != {"train", "val", "test"} or any(v < 0 for v in fr.values()) \
            or fr["train"] <= 0 or fr["val"] <= 0:
        raise ValueError(f"fractions need positive train and val and a non-negative test, "
                         f"got {fr}")
    datasets_with_test = {r.dataset for r in records if r.split == "test"}
    out: list[str | None] = []
    for r in records:
        if r.split == "test" or (r.split == "val" and r.dataset not in datasets_with_test):
            out.append("test")
        elif r.split == "val":
            out.append("val")
        else:
            out.append(None)
    # Per dataset: which splits remain to be filled from its free images.
    for dataset in sorted({r.dataset for r in records}):
        free = [i for i, r in enumerate(records) if r.dataset == dataset and out[i] is None]
        if not free:
            continue
        held = {out[i] for i, r in enumerate(records) if r.dataset == dataset and out[i]}
        want = {k: (0.0 if k in held and k != "train" else v) for k, v in fr.items()}
        total = sum(want.values())
        want = {k: v / total for k, v in want.items()}
        result = assign_splits([_key(records[i]) for i in free], seed=seed, fractions=want)
        for i, s in zip(free, result.splits):
            out[i] = s
    return [str(s) for s in out]


def label_fraction(records: Sequence[Record], train_indices: Sequence[int], fraction: float,
                   seed: int = 0) -> list[int]:
    """A seeded subset of ``train_indices`` holding about ``fraction`` of the images, made of
    whole groups, with at least one group of every class present (classification)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return list(train_indices)
    units: dict[str, list[int]] = {}
    for i in train_indices:
        units.setdefault(unit_of(records[i]), []).append(i)
    order = sorted(units, key=lambda u: hashlib.sha256(f"{seed}|{u}".encode()).hexdigest())
    chosen: list[str] = []
    seen: set[str | None] = set()
    # 1. one unit per class first (in hash order), so no class disappears from training.
    for u in order:
        labels = {records[i].label for i in units[u]}
        if not labels <= seen:
            chosen.append(u)
            seen |= labels
    # 2. then whole units in hash order until the fraction is reached.
    target = fraction * len(train_indices)
    count = sum(len(units[u]) for u in chosen)
    for u in order:
        if count >= target:
            break
        if u not in chosen:
            chosen.append(u)
            count += len(units[u])
    keep = {i for u in chosen for i in units[u]}
    return [i for i in train_indices if i in keep]
