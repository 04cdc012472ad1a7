"""Splits never leak: groups stay on one side, official held-out images never train."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from ultrasam.finetune.data import Record, open_source
from ultrasam.finetune.splits import label_fraction, split_records, unit_of


def _records() -> list[Record]:
    out = []
    for i in range(200):
        out.append(Record(index=i, dataset="A", image_id=i, group=f"p{i // 4}", split=None,
                          label=("x", "y", "z")[i % 3]))
    for i in range(60):  # a dataset with an official train / val split (MMOTU-like)
        out.append(Record(index=200 + i, dataset="B", image_id=i, group=None,
                          split="val" if i % 3 == 0 else "train", label=("x", "y")[i % 2]))
    return out


def _check_no_leak(records: list[Record], splits: list[str]) -> None:
    side: dict[str, set[str]] = defaultdict(set)
    for r, s in zip(records, splits):
        side[unit_of(r)].add(s)
    assert all(len(v) == 1 for v in side.values()), "a group straddles splits"


def test_groups_never_straddle_and_official_val_is_held_out() -> None:
    recs = _records()
    splits = split_records(recs, seed=3)
    _check_no_leak(recs, splits)
    assert set(splits) == {"train", "val", "test"}
    for r, s in zip(recs, splits):
        if r.split == "val":
            assert s == "test"  # official val of a dataset without official test = test
    b_train = [s for r, s in zip(recs, splits) if r.dataset == "B" and r.split == "train"]
    assert "test" not in b_train and {"train", "val"} == set(b_train)
    assert split_records(recs, seed=3) == splits
    assert split_records(recs, seed=4) != splits


def test_label_fraction_takes_whole_groups_and_every_class() -> None:
    recs = _records()
    splits = split_records(recs, seed=0)
    train = [i for i, s in enumerate(splits) if s == "train"]
    sub = label_fraction(recs, train, 0.1, seed=0)
    assert set(sub) <= set(train)
    assert 0.1 * len(train) <= len(sub) < 0.25 * len(train)
    assert {recs[i].label for i in sub} == {"x", "y", "z"}
    units = {unit_of(recs[i]) for i in sub}
    assert all(i in sub for i in train if unit_of(recs[i]) in units)  # whole groups
    assert label_fraction(recs, train, 1.0) == train
    with pytest.raises(ValueError, match="label fraction"):
        label_fraction(recs, train, 0.0)


def test_folder_layouts(tmp_path: Path, class_folder: Path) -> None:
    src = open_source(class_folder)
    assert {r.label for r in src.records} == {"bright", "dark", "mid"}
    assert all(r.split is None and r.group is None for r in src.records)
    # ROOT/<split>/<class>/ gives official splits.
    for split in ("train", "test"):
        (tmp_path / "s" / split / "a").mkdir(parents=True)
        (tmp_path / "s" / split / "a" / "x.png").write_bytes(
            next((class_folder / "dark").iterdir()).read_bytes())
    assert {r.split for r in open_source(tmp_path / "s").records} == {"train", "test"}
    (tmp_path / "s" / "extra").mkdir()
    with pytest.raises(ValueError, match="mixes split folders"):
        open_source(tmp_path / "s")
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "missing")


@pytest.mark.parametrize("name", ["BUS_UCLM", "MMOTU_2d", "BUSI"])
def test_real_corpus_splits_do_not_leak(us_corpus: Path, name: str) -> None:
    path = us_corpus / name / "annotations.coco.json"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    src = open_source(path)
    recs = [r for r in src.records if r.label is not None]
    splits = split_records(recs, seed=0)
    _check_no_leak(recs, splits)
    official = json.loads(path.read_text())["images"]
    held = {im["id"] for im in official if im.get("split") in ("val", "test")}
    assert all(s == "test" for r, s in zip(recs, splits) if r.image_id in held)
    assert {"train", "val", "test"} == set(splits)
