"""Issue 11: converters survive broken files and say what they did; overlays and specks are
dropped by documented rules and counted; separate annotation files stay separate instances;
``data build`` reports per dataset and fails loudly; split units stay bounded.

Synthetic trees (written into ``tmp_path``) for the failure cases, real native samples (skipped
when ``../shared/data`` is absent) where a sample shows the case.
"""

from __future__ import annotations

import importlib
import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ultrasam.cli import main as cli_main
from ultrasam.data.coco import CocoWriter, decode_rle
from ultrasam.data.corpus import BuildFailed, build_corpus
from ultrasam.data.corpus_split import fraction_report
from ultrasam.data.sources._base import Source
from ultrasam.data.sources._overlays import MARK_MAX_FRACTION, MARK_RULE, corner_marks
from ultrasam.data.sources._read import UnreadableFile, read_image, read_mask, threshold
from ultrasam.data.splits import ImageKey, assign_splits

RNG = np.random.default_rng(11)
BAD = b"\xff\xfe"  # never valid UTF-8


def _source(module: str) -> Source:
    return importlib.import_module(f"ultrasam.data.sources.{module}").SOURCE


def _convert(module: str, root: Path) -> CocoWriter:
    source = _source(module)
    writer = CocoWriter(source.spec.name, list(source.spec.structures))
    source.convert(root, writer)
    return writer


def _scan(h: int = 60, w: int = 80) -> np.ndarray:
    return RNG.integers(1, 255, (h, w), dtype=np.uint8)


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _disc(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, (cx, cy), r, 255, thickness=-1)
    return m


def _warnings(writer: CocoWriter) -> list[tuple[str, str]]:
    return [(w.file, w.message) for w in writer.warnings]


# -- metadata tables: one bad byte costs one row ---------------------------------------------------


def test_ddti_bad_byte_in_diagnosis_csv_loses_only_that_row(tmp_path: Path) -> None:
    for name in ("1_1", "2_1", "3_1"):
        _save(tmp_path / f"p_image/{name}.PNG", _scan())
        _save(tmp_path / f"p_mask/{name}.PNG", _disc(60, 80, 30, 40, 9))
    (tmp_path / "diagnosis.csv").write_bytes(b"1_1,4a\n2_1,5" + BAD + b"\n3_1,3\n")
    w = _convert("ddti", tmp_path)
    assert len(w.images) == 3 and w.counts() == {"thyroid_nodule": 3}
    assert [im.get("tirads") for im in w.images] == ["4a", None, "3"]
    assert _warnings(w) == [("diagnosis.csv", "row 2: not valid UTF-8 (byte b'\\xff' at column "
                                              "6); row skipped")]
    assert w.skipped == 1


def test_busbra_bad_byte_in_bus_data_csv_loses_only_that_row(tmp_path: Path) -> None:
    d = tmp_path / "BUSBRA"
    for i in ("0001-l", "0002-l", "0003-r"):
        _save(d / f"Images/bus_{i}.png", _scan())
        _save(d / f"Masks/mask_{i}.png", _disc(60, 80, 30, 40, 10))
    (d / "bus_data.csv").write_bytes(b"ID,Case,Pathology\nbus_0001-l,1,benign\n"
                                     b"bus_0002-l,2,malign" + BAD + b"ant\nbus_0003-r,3,benign\n")
    w = _convert("busbra", tmp_path)
    assert [(im["group"], im["label"]) for im in w.images] == \
        [("1", "benign"), (None, None), ("3", "benign")]
    (warning,) = _warnings(w)
    assert warning[0] == "BUSBRA/bus_data.csv" and warning[1].startswith("row 3: not valid UTF-8")


def test_bus_uclm_and_hc18_bad_rows_are_named(tmp_path: Path) -> None:
    d = tmp_path / "BUS-UCLM"
    for name in ("ABCD_000", "ABCD_001"):
        _save(d / f"images/{name}.png", np.stack([_scan()] * 3, -1))
        m = np.zeros((60, 80, 3), np.uint8)
        m[_disc(60, 80, 30, 40, 10) > 0] = (0, 255, 0)
        _save(d / f"masks/{name}.png", m)
    (d / "INFO.csv").write_bytes(b"\xef\xbb\xbfImage;Label\nABCD_000.png;Benign\n"
                                 b"ABCD_001.png;Malign" + BAD + b"\n")
    w = _convert("bus_uclm", tmp_path)
    assert [im["label"] for im in w.images] == ["benign", "benign"]  # row 3 lost: mask colour
    assert [(Path(f).name, m[:6]) for f, m in _warnings(w)] == [("INFO.csv", "row 3:")]

    hc = tmp_path / "hc"
    for stem in ("001_HC", "002_HC"):
        _save(hc / f"training_set/{stem}.png", _scan(120, 160))
        _save(hc / f"training_set/{stem}_Annotation.png", _disc(120, 160, 60, 80, 30))
    (hc / "training_set_pixel_size_and_HC.csv").write_bytes(
        b"filename,pixel size(mm)\n001_HC.png,0.1\n002_HC.png,0." + BAD + b"2\n")
    w = _convert("hc18", hc)
    assert [im.get("pixel_spacing_mm") for im in w.images] == [[0.1, 0.1], None]
    assert [(f, m[:6]) for f, m in _warnings(w)] == [("training_set_pixel_size_and_HC.csv",
                                                      "row 3:")]


# -- malformed JSON --------------------------------------------------------------------------------


def test_tg3k_malformed_split_json_keeps_the_frames(tmp_path: Path) -> None:
    d = tmp_path / "tg3k"
    for n in range(3):
        _save(d / f"thyroid-image/{n:04d}.jpg", _scan())
        _save(d / f"thyroid-mask/{n:04d}.jpg", _disc(60, 80, 30, 40, 15))
    (d / "tg3k-trainval.json").write_text('{"train": [0, 1,', encoding="utf-8")
    w = _convert("tg3k", tmp_path)
    assert [(im["frame"], im["split"]) for im in w.images] == [(0, None), (1, None), (2, None)]
    ((file, message),) = _warnings(w)
    assert file == "tg3k/tg3k-trainval.json" and message.startswith("not valid JSON")
    assert message.endswith("file skipped")


def test_mmotu_malformed_split_json_is_named(tmp_path: Path) -> None:
    d = tmp_path / "Simple_Cyst"
    _save(d / "images/1.JPG", np.stack([_scan()] * 3, -1))
    ann = np.zeros((60, 80, 3), np.uint8)
    ann[_disc(60, 80, 30, 40, 12) > 0] = (64, 0, 0)
    _save(d / "annotations/1.PNG", ann)
    (tmp_path / "OTU_2D_8-layers.json").write_bytes(b"[{\"file_path_img\": " + BAD)
    w = _convert("mmotu2d", tmp_path)
    assert len(w.images) == 1 and w.images[0]["split"] is None
    assert [(f, m[:14]) for f, m in _warnings(w)] == [("OTU_2D_8-layers.json", "not valid JSON")]


# -- images: truncated files and decompression bombs -----------------------------------------------


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims ``width`` x ``height`` grey pixels and whose data is 1 row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b""))
    return path


def test_readers_refuse_bombs_and_truncated_files(tmp_path: Path) -> None:
    bomb = _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(UnreadableFile, match="decompression bomb") as err:
        read_image(bomb)
    assert err.value.path == bomb
    with pytest.raises(UnreadableFile, match="decompression bomb"):
        read_mask(bomb)
    # Under PIL's own limit but over ours: refused from the header, before decoding.
    with pytest.raises(UnreadableFile, match="header claims 9000 x 8000 pixels"):
        read_image(_png_header_only(tmp_path / "big.png", 9000, 8000))
    good = _save(tmp_path / "good.png", _scan(64, 64))
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:200])
    with pytest.raises(UnreadableFile, match="cannot decode image"):
        read_image(tmp_path / "cut.png")


def test_stu_hospital_goes_on_after_a_bomb_and_a_truncated_image(tmp_path: Path) -> None:
    d = tmp_path / "Hospital"
    for k in range(1, 6):
        _save(d / f"Test_Image_{k}.png", _scan(128, 128))
        _save(d / f"mask_{k}.png", _disc(512, 512, 256, 256, 100))
    _png_header_only(d / "Test_Image_2.png", 20000, 20000)
    (d / "mask_4.png").write_bytes((d / "mask_4.png").read_bytes()[:300])
    w = _convert("stu_hospital", tmp_path)
    assert [im["source"] for im in w.images] == ["Hospital/Test_Image_1.png",
                                                 "Hospital/Test_Image_3.png",
                                                 "Hospital/Test_Image_5.png"]
    files = [f for f, _ in _warnings(w)]
    assert files == ["Hospital/Test_Image_2.png", "Hospital/mask_4.png"]
    assert "decompression bomb" in w.warnings[0].message and w.skipped == 2


# -- orphans ---------------------------------------------------------------------------------------


def test_orphan_masks_are_named(tmp_path: Path) -> None:
    nerve = tmp_path / "nerve"
    for name in ("7_1", "7_2"):
        _save(nerve / f"train/{name}.tif", _scan(42, 58))
        _save(nerve / f"train/{name}_mask.tif", _disc(42, 58, 20, 20, 6))
    _save(nerve / "train/8_1_mask.tif", _disc(42, 58, 20, 20, 6))  # its image is missing
    w = _convert("nerve", nerve)
    assert len(w.images) == 2
    assert _warnings(w) == [("train/8_1_mask.tif", "mask without a matching image; skipped")]

    busi = tmp_path / "busi/Dataset_BUSI_with_GT/benign"
    _save(busi / "benign (1).png", _scan())
    _save(busi / "benign (1)_mask.png", _disc(60, 80, 30, 40, 9))
    _save(busi / "benign (2)_mask.png", _disc(60, 80, 30, 40, 9))
    w = _convert("busi", tmp_path / "busi")
    assert len(w.images) == 1
    assert _warnings(w) == [("Dataset_BUSI_with_GT/benign/benign (2)_mask.png",
                             "mask without a matching image; skipped")]


# -- BUSI: separate mask files are separate instances ----------------------------------------------


def test_busi_touching_and_nested_lesion_files_stay_separate(tmp_path: Path) -> None:
    d = tmp_path / "Dataset_BUSI_with_GT/benign"
    _save(d / "benign (1).png", _scan(80, 100))
    _save(d / "benign (1)_mask.png", _disc(80, 100, 40, 30, 20))
    _save(d / "benign (1)_mask_1.png", _disc(80, 100, 40, 30, 8))  # nested inside the first
    _save(d / "benign (1)_mask_2.png", _disc(80, 100, 40, 65, 15))  # touches the first
    w = _convert("busi", tmp_path)
    assert w.counts() == {"breast_lesion": 3}
    masks = [decode_rle(a["segmentation"]) for a in w.annotations]
    for a, m, name in zip(w.annotations, masks, ("", "_1", "_2")):
        assert np.array_equal(m, read_mask(d / f"benign (1)_mask{name}.png") >= 128)


def test_busi_real_multi_mask_images(native_samples: Path) -> None:
    root = native_samples / "BUSI"
    w = _convert("busi", root)
    by_source = {im["source"]: im for im in w.images}
    for k in (4, 25, 100):
        stem = f"Dataset_BUSI_with_GT/benign/benign ({k})"
        anns = [a for a in w.annotations if a["image_id"] == by_source[stem + ".png"]["id"]]
        assert len(anns) == 2, stem
        for a, suffix in zip(anns, ("_mask", "_mask_1")):
            expected = threshold(read_mask(root / f"{stem}{suffix}.png"), 128)  # 1-bit or RGBA
            assert np.array_equal(decode_rle(a["segmentation"]), expected), (stem, suffix)


# -- TG3K: corner marks ----------------------------------------------------------------------------


def test_corner_mark_rule_on_a_synthetic_glyph_row() -> None:
    mask = np.zeros((256, 256), bool)
    mask[80:200, 60:190] = True  # the gland
    for x in range(8, 48, 8):  # a row of 4 x 6 px glyphs in the top-left corner
        mask[10:16, x:x + 4] = True
    mask[12:19, 230:236] = True  # a 42-px glyph in the top-right corner
    mask[100:104, 230:234] = True  # small but not in a corner: the small-component rule's job
    marks = corner_marks(mask)
    assert marks.sum() == 5 * 24 + 42 and not marks[80:, :].any()
    big = np.zeros((256, 256), bool)
    big[2:60, 2:60] = True  # large region in a corner: never a mark
    assert not corner_marks(big).any()


def test_tg3k_real_marks_are_removed_and_counted(native_samples: Path) -> None:
    w = _convert("tg3k", native_samples / "TG3K")
    assert w.dropped == {(MARK_RULE, "thyroid_gland"): 21}
    assert w.counts() == {"thyroid_gland": 12}
    assert min(a["area"] for a in w.annotations) > 2000


def test_corner_mark_rule_keeps_every_shared_corpus_tg3k_instance(us_corpus: Path) -> None:
    coco = json.loads((us_corpus / "TG3K/annotations.coco.json").read_text())
    assert len(coco["annotations"]) == 1899
    sizes = {im["id"]: im["height"] * im["width"] for im in coco["images"]}
    # Each annotation is one component: only those under the mark size limit need decoding.
    small = [a for a in coco["annotations"] if a["area"] < MARK_MAX_FRACTION * sizes[a["image_id"]]]
    assert len(small) == 9  # real gland fragments of 116-152 px, none in a top corner
    assert not any(corner_marks(decode_rle(a["segmentation"])).any() for a in small)


# -- data build: summary table, manifest, exit status ----------------------------------------------


def _tg3k_tree(root: Path, with_marks: bool) -> None:
    for n in range(4):
        image = _scan(256, 256)
        mask = _disc(256, 256, 140, 128, 60)
        if with_marks:
            mask[10:16, 8:12] = 255  # 24-px glyph, top-left corner
            mask[10:16, 240:246] = 255  # 36-px glyph, top-right corner
        mask[200, 20] = 255  # a 1-px speck: small-component rule
        _save(root / f"data/processed/image/train/{n:04d}.png", image)
        _save(root / f"data/processed/mask/train/{n:04d}.png", mask)


def test_build_table_manifest_and_exit_status(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    _tg3k_tree(src / "TG3K", with_marks=True)
    ddti = src / "DDTI"
    for name in ("1_1", "2_1"):
        _save(ddti / f"p_image/{name}.PNG", _scan())
        _save(ddti / f"p_mask/{name}.PNG", _disc(60, 80, 30, 40, 9))
    (ddti / "diagnosis.csv").write_bytes(b"1_1,4\n2_1," + BAD + b"\n")
    (src / "S1").mkdir()  # no S1 files: its converter raises
    _save(src / "NERVE/train/3_1_mask.tif", _disc(42, 58, 20, 20, 6))  # only an orphan mask

    assert cli_main(["data", "build", str(src), "--out", str(tmp_path / "out")]) == 1
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.split() and line.split()[0] in ("TG3K", "DDTI", "S1", "NERVE")}
    assert rows["TG3K"][:6] == ["TG3K", "ok", "4", "4", "0", "corner_mark"]
    assert rows["DDTI"][:5] == ["DDTI", "ok", "2", "2", "1"]
    assert rows["S1"][:3] == ["S1", "failed", "0"]
    assert rows["NERVE"][:5] == ["NERVE", "empty", "0", "0", "1"]
    assert "S1, NERVE" in err or "NERVE, S1" in err
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    conv = manifest["conversion"]
    assert conv["S1"]["status"] == "failed" and "FileNotFoundError" in conv["S1"]["error"]
    assert conv["NERVE"]["error"].startswith("no images converted (1 items skipped")
    assert conv["TG3K"]["dropped"] == {"corner_mark": 8, "small_component": 4}
    # The manifest's filter report matches what was dropped, dataset by dataset.
    assert manifest["filter"]["dropped"] == 12
    assert manifest["filter"]["dropped_per_dataset_rule"] == {
        "TG3K": {"corner_mark": 8, "small_component": 4}}
    assert manifest["datasets"]["TG3K"]["instances"] == 4
    assert manifest["datasets"]["TG3K"]["fractions"]["requested"] == \
        {"train": 0.8, "val": 0.1, "test": 0.1}
    build = [w for w in manifest["warnings"] if w["stage"] == "build"]
    assert sorted(w["dataset"] for w in build) == ["NERVE", "S1"]
    named = {(w["dataset"], w["file"]) for w in manifest["warnings"] if w["stage"] == "convert"}
    assert named == {("DDTI", "diagnosis.csv"), ("NERVE", "train/3_1_mask.tif")}

    assert cli_main(["data", "build", str(src), "--only", "TG3K", "DDTI",
                     "--out", str(tmp_path / "ok")]) == 0


def test_build_where_every_dataset_fails_names_each(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    (src / "S1").mkdir(parents=True)
    (src / "TG3K").mkdir()
    with pytest.raises(BuildFailed) as err:
        build_corpus(src, tmp_path / "out", progress=False)
    assert [(r.dataset, r.status) for r in err.value.results] == [("S1", "failed"),
                                                                   ("TG3K", "empty")]
    assert "S1 (S1): converter failed" in str(err.value) and "TG3K (TG3K): no images" in \
        str(err.value)
    assert cli_main(["data", "build", str(src), "--out", str(tmp_path / "out")]) == 1
    out, err_text = capsys.readouterr()
    assert "S1" in out and "failed" in out and "no requested dataset converted" in err_text
    assert cli_main(["data", "build", str(src), "--only", "TG3K", "DDTI",
                     "--out", str(tmp_path / "out")]) == 1
    assert "DDTI (): no folder for DDTI" in capsys.readouterr().err


# -- splits ----------------------------------------------------------------------------------------


def test_near_duplicate_chains_do_not_swallow_a_dataset() -> None:
    # 400 frames whose neighbours are all near-duplicates (a video): chained links would make one
    # unit; bounded links keep units of at most max(50, 2 % of 400) = 50 images.
    images = [ImageKey("V", i) for i in range(400)]
    chain = [(i, i + 1) for i in range(399)]
    result = assign_splits(images, chain, seed=0, distances=[1] * 399)
    units: dict[str, int] = {}
    for u in result.units:
        units[u] = units.get(u, 0) + 1
    assert max(units.values()) == 50 and len(units) == 8
    counts = {s: result.splits.count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 300, "val": 50, "test": 50}
    assert len(result.refused_links) == 7
    report = result.refused_report(images)
    assert report["V"]["refused"] == 7 and report["V"]["across_splits"] >= 1
    assert any("7 near-duplicate links left unmerged" in w["message"] for w in result.warnings)
    # Closest links win: a 0-bit link is taken before 4-bit links that would fill the unit.
    pairs = [(0, 1), (1, 2), (2, 3)]
    r = assign_splits([ImageKey("W", i, group=str(i)) for i in range(4)], pairs, block=1,
                      distances=[4, 0, 4], max_unit_fraction=0.5)
    assert r.units[1] == r.units[2] and r.refused_links == [(0, 1), (2, 3)]


def test_empty_splits_are_reported_with_achieved_fractions() -> None:
    stats = {"NERVE": {"images": 55, "splits": {"train": 55, "val": 0, "test": 0},
                       "official_splits": {}},
             "MM": {"images": 10, "splits": {"train": 7, "val": 3, "test": 0},
                    "official_splits": {"train": 7, "val": 3}}}
    warnings = fraction_report(stats, {"train": 0.8, "val": 0.1, "test": 0.1})
    assert [(w["dataset"], w["message"][:17]) for w in warnings] == [
        ("NERVE", "split 'val' is em"), ("NERVE", "split 'test' is e"), ("MM", "split 'test' is e")]
    assert "official split covers every image" in warnings[2]["message"]
    assert stats["NERVE"]["fractions"]["achieved"] == {"train": 1.0, "val": 0.0, "test": 0.0}


def test_every_source_module_says_what_was_checked_for_overlays() -> None:
    from ultrasam.data.registry import all_sources

    missing = [s.spec.name for s in all_sources()
               if "Overlays checked:" not in (importlib.import_module(
                   s.convert.__module__).__doc__ or "")]
    assert not missing, missing
