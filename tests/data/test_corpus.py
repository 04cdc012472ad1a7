"""Corpus builder: conversion, filter, near-duplicates, splits, merges, manifest, determinism."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from ultrasam.cli import main as cli_main
from ultrasam.data.coco import CocoWriter, read_coco
from ultrasam.data.corpus import build_corpus, split_corpus
from ultrasam.data.dedup import hamming, near_duplicate_pairs, phash_array
from ultrasam.data.filters import FilterReport, filter_annotations, min_area
from ultrasam.data.sources._base import Source, SourceSpec
from ultrasam.data.splits import ImageKey, assign_splits, base_group

# --------------------------------------------------------------------------------------------
# A tiny fake source: reads <native>/<patient>_<n>.png + <patient>_<n>_mask.png (0 bg, 255 lesion)


def _spec(name: str, aliases: tuple[str, ...]) -> SourceSpec:
    return SourceSpec(name=name, aliases=aliases, url="https://example.org", citation="test",
                      licence=f"licence of {name}", anatomy="phantom", structures=("lesion",),
                      kind="2d", native_format="PNG")


def _convert(native: Path, writer: CocoWriter) -> None:
    for path in sorted(native.glob("*.png")):
        if path.stem.endswith("_mask"):
            continue
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        mask = cv2.imread(str(path.with_name(path.stem + "_mask.png")), cv2.IMREAD_GRAYSCALE)
        if image is None or mask is None:
            writer.warn(path.name, "unreadable image or mask; pair skipped")
            continue
        patient, n = path.stem.split("_")
        writer.add_image(image, {"lesion": mask > 127}, source=path.name, group=patient,
                         split="validation" if patient == "official" else None)


FAKE_A = Source(_spec("FAKE_A", ("fake-a-copy",)), _convert)
FAKE_B = Source(_spec("FAKE_B", ()), _convert)


def _scan_image(seed: int, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 255, (size, size), dtype=np.uint8), (0, 0), 3)
    image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX)
    mask = np.zeros((size, size), np.uint8)
    cy, cx = rng.integers(12, size - 12, 2)
    cv2.circle(mask, (int(cx), int(cy)), 6, 255, -1)
    mask[0, 0] = 255  # a 1-px speck: under the small-component threshold only at larger sizes
    return image, mask


def _write_pair(folder: Path, stem: str, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image, mask = _scan_image(seed)
    cv2.imwrite(str(folder / f"{stem}.png"), image)
    cv2.imwrite(str(folder / f"{stem}_mask.png"), mask)


@pytest.fixture()
def sources_dir(tmp_path: Path) -> Path:
    root = tmp_path / "sources"
    a, b = root / "fake-a-copy", root / "FAKE_B"
    for p in range(6):
        for n in range(3):
            _write_pair(a, f"p{p}_{n}", seed=100 * p + n)
    for n in range(2):
        _write_pair(a, f"official_{n}", seed=900 + n)
    (a / "broken_0.png").write_bytes(b"not a png")  # bad input: must be named, not fatal
    (a / "broken_0_mask.png").write_bytes(b"")
    for n in range(4):
        _write_pair(b, f"q{n}_0", seed=5000 + n)
    _write_pair(b, "q9_0", seed=0)  # the same scan as FAKE_A p0_0: a cross-dataset duplicate
    (root / "unknown-dataset").mkdir()
    return root


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _split_of_groups(corpus: Path) -> dict[tuple[str, str], set[str]]:
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for split in ("train", "val", "test"):
        for im in read_coco(corpus / f"{split}.coco.json")["images"]:
            assert im["split"] == split
            seen[("unit", im["split_group"])].add(split)
            if im["group"] is not None:
                seen[(im["dataset"], im["group"])].add(split)
    return seen


def test_build_is_deterministic_leakage_free_and_reports_bad_input(sources_dir, tmp_path):
    m1 = build_corpus(sources_dir, tmp_path / "c1", sources=[FAKE_A, FAKE_B], progress=False)
    build_corpus(sources_dir, tmp_path / "c2", sources=[FAKE_A, FAKE_B], progress=False)
    c1 = tmp_path / "c1"
    assert _all_bytes(c1) == _all_bytes(tmp_path / "c2")

    # Layout and per-dataset schema.
    coco_a = read_coco(c1 / "FAKE_A" / "annotations.coco.json")
    assert len(coco_a["images"]) == 20
    assert all((c1 / "FAKE_A" / "images" / im["file_name"]).is_file() for im in coco_a["images"])
    assert {im["split"] for im in coco_a["images"]} == {None, "val"}
    assert (c1 / "lodo" / "FAKE_A.train.coco.json").is_file()

    # No group and no split unit on two sides; official val kept; duplicates together.
    assert all(len(s) == 1 for s in _split_of_groups(c1).values())
    merged = {im["source"] + "@" + im["dataset"]: im["split"]
              for s in ("train", "val", "test")
              for im in read_coco(c1 / f"{s}.coco.json")["images"]}
    assert merged["official_0.png@FAKE_A"] == merged["official_1.png@FAKE_A"] == "val"
    assert merged["p0_0.png@FAKE_A"] == merged["q9_0.png@FAKE_B"]
    assert m1["duplicates"]["pairs_across_datasets"] == {"FAKE_A|FAKE_B": 1}

    # Merges: one category, structure kept, file_name relative to the corpus.
    train = read_coco(c1 / "train.coco.json")
    assert train["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert {a["structure"] for a in train["annotations"]} == {"lesion"}
    assert all((c1 / im["file_name"]).is_file() for im in train["images"])
    assert [im["id"] for im in train["images"]] == list(range(1, len(train["images"]) + 1))

    # LODO: no held-out images, and the held-out dataset's duplicate is excluded too.
    lodo_b = read_coco(c1 / "lodo" / "FAKE_B.train.coco.json")
    assert {im["dataset"] for im in lodo_b["images"]} == {"FAKE_A"}
    assert "p0_0.png" not in {im["source"] for im in lodo_b["images"]}
    assert m1["lodo"]["FAKE_B"]["excluded_duplicates"] == (
        1 if merged["p0_0.png@FAKE_A"] == "train" else 0)

    # Manifest: counts, licences, hashes of every file, warnings naming the bad inputs.
    manifest = json.loads((c1 / "manifest.json").read_text())
    assert manifest["datasets"]["FAKE_A"]["images"] == 20
    assert manifest["licences"] == {"FAKE_A": "licence of FAKE_A", "FAKE_B": "licence of FAKE_B"}
    files = {p.relative_to(c1).as_posix() for p in c1.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"manifest.json"}
    digest = hashlib.sha256((c1 / "train.coco.json").read_bytes()).hexdigest()
    assert manifest["files"]["train.coco.json"] == digest
    named = {(w["stage"], w["file"]) for w in manifest["warnings"]}
    assert ("convert", "broken_0.png") in named
    assert ("build", "unknown-dataset") in named
    total = sum(v["images"] for v in manifest["splits"].values())
    assert total == 25


def test_build_only_and_seed(sources_dir, tmp_path):
    m = build_corpus(sources_dir, tmp_path / "c", only=["fake_b"], sources=[FAKE_A, FAKE_B],
                     progress=False)
    assert sorted(m["datasets"]) == ["FAKE_B"]
    with pytest.raises(KeyError, match="no dataset source named"):
        build_corpus(sources_dir, tmp_path / "d", only=["nope"], sources=[FAKE_A, FAKE_B])


def test_split_reports_missing_and_mismatched_images(sources_dir, tmp_path):
    corpus = tmp_path / "c"
    build_corpus(sources_dir, corpus, sources=[FAKE_A, FAKE_B], progress=False)
    coco = read_coco(corpus / "FAKE_B" / "annotations.coco.json")
    (corpus / "FAKE_B" / "images" / coco["images"][0]["file_name"]).unlink()
    cv2.imwrite(str(corpus / "FAKE_B" / "images" / coco["images"][1]["file_name"]),
                np.zeros((10, 12), np.uint8))
    before = (corpus / "FAKE_B" / "annotations.coco.json").read_bytes()
    m = split_corpus(corpus, tmp_path / "out", progress=False)
    assert (corpus / "FAKE_B" / "annotations.coco.json").read_bytes() == before
    messages = [w["message"] for w in m["warnings"] if w["dataset"] == "FAKE_B"]
    assert any("missing image file" in s for s in messages)
    assert any("record says 48x48" in s for s in messages)
    assert m["datasets"]["FAKE_B"]["images"] == 3
    # Merges written elsewhere still resolve their images through info.image_root.
    train = read_coco(tmp_path / "out" / "train.coco.json")
    root = (tmp_path / "out" / train["info"]["image_root"]).resolve()
    assert all((root / im["file_name"]).is_file() for im in train["images"])


def test_registry_names_resolve_and_unknown_folders_fail_clearly(tmp_path):
    (tmp_path / "src" / "nothing-known").mkdir(parents=True)
    with pytest.raises(ValueError, match="matches a registered source"):
        build_corpus(tmp_path / "src", tmp_path / "out", sources=[FAKE_A])
    with pytest.raises(FileNotFoundError):
        build_corpus(tmp_path / "missing", tmp_path / "out", sources=[FAKE_A])


# --------------------------------------------------------------------------------------------
# Units: filter, pHash, split rules


def test_small_component_rule_is_a_fraction_of_the_image_or_a_physical_area():
    # 1/2000 of the image area, whatever the size (the old 12-px-at-384 rule, scaled by area,
    # fell to 2 px at 128 x 128); 1 mm^2 where the pixel spacing is known.
    assert min_area(256, 256) == 33 and min_area(384, 384) == 74 and min_area(128, 128) == 9
    assert min_area(2000, 2000) == 2000 and min_area(1, 1) == 1
    assert min_area(540, 800, [0.1, 0.1]) == 100 and min_area(540, 800, [0.5, 0.25]) == 8
    assert min_area(540, 800, [0, 0.1]) == min_area(540, 800)  # bad spacing: fraction rule
    images = [{"id": 1, "width": 800, "height": 600},
              {"id": 2, "width": 800, "height": 600, "pixel_spacing_mm": [0.2, 0.2]}]
    anns = [{"id": 1, "image_id": 1, "area": 239, "structure": "a"},
            {"id": 2, "image_id": 1, "area": 240, "structure": "a"},
            {"id": 3, "image_id": 2, "area": 24, "structure": "b"},
            {"id": 4, "image_id": 2, "area": 25, "structure": "b"}]
    report = FilterReport()
    assert [a["id"] for a in filter_annotations(images, anns, "D", report)] == [2, 4]
    assert report.dropped_per_dataset == {"D": 2}
    assert report.dropped_per_structure == {"a": 1, "b": 1}
    assert report.as_dict()["dropped_per_rule"] == {"small_component": 2}
    kept = [anns[1], anns[3]]
    assert filter_annotations(images, kept, "D", FilterReport()) == kept  # idempotent


def test_phash_is_robust_to_recoding_and_separates_scans():
    a, _ = _scan_image(1, 128)
    b, _ = _scan_image(2, 128)
    ok, jpg = cv2.imencode(".jpg", cv2.resize(a, (96, 96)), [cv2.IMWRITE_JPEG_QUALITY, 70])
    recoded = cv2.imdecode(jpg, cv2.IMREAD_GRAYSCALE)
    assert hamming(phash_array(a), phash_array(recoded)) <= 4
    assert hamming(phash_array(a), phash_array(b)) > 10


def test_multi_index_search_equals_brute_force():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 40, dtype=np.uint64)
    flips = np.array([1 << int(k) for k in rng.integers(0, 64, 40)], dtype=np.uint64)
    hashes = np.concatenate([base, base ^ flips, base[:5] ^ np.uint64(0b11111)])
    brute = sorted((i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
                   if int(hashes[i] ^ hashes[j]).bit_count() <= 4)
    assert near_duplicate_pairs(hashes, 4) == brute


def test_official_split_wins_and_straddles_are_reported():
    images = [ImageKey("A", 1, official_split="train"), ImageKey("A", 2, official_split="val"),
              ImageKey("B", 1), ImageKey("B", 2)]
    result = assign_splits(images, duplicate_pairs=[(0, 1), (1, 2)], seed=3)
    assert result.splits[:3] == ["train", "val", "val"]  # duplicate follows the held-out side
    assert len(result.warnings) == 1 and "straddles" in result.warnings[0]["message"]


def test_sequential_frames_grouped_in_blocks_and_assignment_is_order_free():
    frames = [ImageKey("TG3K", i + 1, source=f"{s}/{n:04d}.jpg")
              for i, (s, n) in enumerate([("train", 1), ("val", 49), ("test", 50), ("train", 99)])]
    assert [base_group(k) for k in frames] == ["TG3K/frames:0"] * 2 + ["TG3K/frames:1"] * 2
    many = [ImageKey("D", i, group=f"g{i // 3}") for i in range(300)] + frames
    r1 = assign_splits(many, seed=7)
    r2 = assign_splits(many[::-1], seed=7)
    assert dict(zip(many, r1.splits)) == dict(zip(many[::-1], r2.splits))
    counts = {s: r1.splits[:300].count(s) for s in ("train", "val", "test")}
    assert abs(counts["train"] - 240) <= 3 and abs(counts["val"] - 30) <= 3
    assert r1.splits[300] == r1.splits[301] and r1.splits[302] == r1.splits[303]
    assert assign_splits(many, seed=8).splits != r1.splits


def test_partial_official_split_spreads_the_rest_over_undefined_splits():
    images = [ImageKey("U", i, official_split="test" if i < 10 else None) for i in range(100)]
    splits = assign_splits(images).splits
    assert splits[:10] == ["test"] * 10
    assert set(splits[10:]) == {"train", "val"}
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(images, fractions={"train": 0.5, "val": 0.1, "test": 0.1})


# --------------------------------------------------------------------------------------------
# Real data


def test_split_shared_corpus(us_corpus, tmp_path):
    inputs = {p: p.read_bytes() for p in sorted(us_corpus.glob("*/annotations.coco.json"))}
    assert cli_main(["data", "split", str(us_corpus), "--out", str(tmp_path / "s")]) == 0
    assert {p: p.read_bytes() for p in inputs} == inputs  # the input is never modified
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert sum(v["images"] for v in manifest["splits"].values()) == 8064
    assert manifest["structures"]["fetal_head"] == 999 + 1358
    assert manifest["datasets"]["MMOTU_2d"]["splits"]["val"] == 469
    assert manifest["datasets"]["MMOTU_2d"]["splits"]["train"] == 999
    # Only units that straddle official splits (reported: MMOTU near-duplicates across its
    # official train/val) may appear on two sides.
    straddles = {w["file"] for w in manifest["warnings"] if "straddles" in w["message"]}
    crossing = {k[1] for k, s in _split_of_groups(tmp_path / "s").items() if len(s) > 1}
    assert crossing and crossing <= straddles
    assert all(u.startswith("MMOTU_2d/") for u in straddles)
    val = read_coco(tmp_path / "s" / "val.coco.json")
    tg3k = {}
    for im in val["images"]:
        if im["dataset"] == "TG3K":
            tg3k[im["split_group"]] = im["split"]
    assert tg3k and all(k.startswith("TG3K/frames:") for k in tg3k)
    assert manifest["licences"]["USGRA"].startswith("CC-BY-4.0")


def test_build_native_samples_twice_identical(native_samples, tmp_path):
    assert cli_main(["data", "build", str(native_samples), "--out", str(tmp_path / "a")]) == 0
    assert cli_main(["data", "build", str(native_samples), "--out", str(tmp_path / "b")]) == 0
    assert _all_bytes(tmp_path / "a") == _all_bytes(tmp_path / "b")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert len(manifest["datasets"]) == 12
    assert all(len(s) == 1 for s in _split_of_groups(tmp_path / "a").values())
    named = " ".join(w["file"] for w in manifest["warnings"])
    assert "HESN_000" in named and "598" in named


def test_docs_sources_page_matches_the_registry() -> None:
    from ultrasam.data.catalogue import sources_markdown

    page = Path(__file__).resolve().parents[2] / "docs" / "sources.md"
    assert page.read_text(encoding="utf-8") == sources_markdown(), (
        "docs/sources.md is stale: regenerate it with "
        "python -c \"from ultrasam.data.catalogue import sources_markdown; "
        "open('docs/sources.md', 'w').write(sources_markdown())\"")
