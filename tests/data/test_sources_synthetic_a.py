"""Synthetic native trees for 17 US-43d sources without real samples, plus their helpers.

Each test writes, under tmp_path, a tiny tree laid out exactly as each release is documented in
its converter's docstring (names, formats, label codes, archives; the sources are listed in
docs/sources.md), converts it and checks the exact images, instances per structure, groups,
frame/slice indices, splits/labels, and that a corrupt
file, a size mismatch or an unknown label value is warned about (naming the file) while the rest
converts.
"""

from __future__ import annotations

import csv
import gzip
import importlib
import io
import os
import tarfile
import zipfile
import zlib
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest

from ultrasam.data.coco import CocoWriter, decode_rle
from ultrasam.data.sources import _tree, _volumes
from ultrasam.data.sources._tree import ArchiveError, NativeTree, RarUnavailableError

RNG = np.random.default_rng(0)


# -- writers for synthetic files ------------------------------------------------------------------
def scan(h: int = 32, w: int = 40) -> np.ndarray:
    return RNG.integers(20, 230, (h, w), dtype=np.uint8)


def boxes(h: int, w: int, rects: list[tuple[int, int, int, int]], value: int = 255,
          dtype: type = np.uint8) -> np.ndarray:
    """Mask with ``value`` in each (y0, x0, y1, x1) rectangle (exclusive ends)."""
    m = np.zeros((h, w), dtype)
    for y0, x0, y1, x1 in rects:
        m[y0:y1, x0:x1] = value
    return m


def encode(arr: np.ndarray, ext: str) -> bytes:
    data = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr
    ok, buf = cv2.imencode(ext, data)
    assert ok
    return buf.tobytes()


def put(path: Path, data: bytes | np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else encode(data, path.suffix))
    return path


def mha_bytes(arr: np.ndarray, compressed: bool = False, msb: bool = False,
              data_file: str = "LOCAL") -> tuple[bytes, bytes]:
    """(header [+ inline data], external data) of a MetaImage holding ``arr`` (Z x Y x X)."""
    etype = {np.dtype(np.uint8): "MET_UCHAR", np.dtype(np.int16): "MET_SHORT",
             np.dtype(np.float32): "MET_FLOAT"}[arr.dtype]
    data = arr.astype(arr.dtype.newbyteorder(">" if msb else "<")).tobytes()
    if compressed:
        data = zlib.compress(data)
    header = (f"ObjectType = Image\nNDims = {arr.ndim}\nBinaryData = True\n"
              f"BinaryDataByteOrderMSB = {msb}\nCompressedData = {compressed}\n"
              f"ElementSpacing = {' '.join(['0.5'] * arr.ndim)}\n"
              f"DimSize = {' '.join(str(d) for d in arr.shape[::-1])}\n"
              f"ElementType = {etype}\nElementDataFile = {data_file}\n").encode()
    return (header + data, b"") if data_file == "LOCAL" else (header, data)


def nifti_gz(arr: np.ndarray) -> bytes:
    """``.nii.gz`` bytes of a T x Y x X array, stored nibabel-style as X x Y x T."""
    return gzip.compress(nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)),
                                         np.eye(4)).to_bytes(), mtime=0)


def npy_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=not isinstance(obj, np.ndarray) or obj.dtype == object)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def avi(path: Path, frames: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    vw.release()


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


# -- conversion and inspection --------------------------------------------------------------------
def run(module: str, root: Path, images_dir: Path | None = None) -> CocoWriter:
    source = importlib.import_module(f"ultrasam.data.sources.{module}").SOURCE
    spec = source.spec
    assert spec.us43d and not spec.real_sample_tests and spec.licence and spec.citation
    writer = CocoWriter(spec.name, list(spec.structures), images_dir=images_dir)
    before = snapshot(root)
    source.convert(root, writer)
    assert snapshot(root) == before, "the converter modified the native tree"
    return writer


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def counts(w: CocoWriter) -> dict[str, int]:
    return {k: v for k, v in w.counts().items() if v}


def field(w: CocoWriter, key: str) -> list[object]:
    return [im.get(key) for im in w.images]


def warned(w: CocoWriter, file_part: str, text: str = "") -> bool:
    return any(file_part in x.file and text in x.message for x in w.warnings)


def masks_of(w: CocoWriter, image_index: int, structure: str) -> list[np.ndarray]:
    image_id = w.images[image_index]["id"]
    return [decode_rle(a["segmentation"]) for a in w.annotations
            if a["image_id"] == image_id and a["structure"] == structure]


# -- helpers: archive-aware tree ------------------------------------------------------------------
def test_tree_walks_nested_archives_read_only(tmp_path: Path) -> None:
    inner = zip_bytes({"d/in.txt": b"inner", "__MACOSX/d/._in.txt": b"junk"})
    put(tmp_path / "a" / "outer.zip", zip_bytes({"inner.zip": inner, "o.txt": b"o", "x/": b""}))
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w:gz") as t:
        info = tarfile.TarInfo("./q/x.txt")
        info.size = 2
        t.addfile(info, io.BytesIO(b"hi"))
    put(tmp_path / "t.tgz", tar_buf.getvalue())
    put(tmp_path / "plain.txt", b"p")
    put(tmp_path / ".DS_Store", b"junk")
    before = snapshot(tmp_path)
    with NativeTree(tmp_path) as tree:
        got = {e.path: e.read_bytes() for e in tree.files()}
        plain = [e for e in tree.files() if e.path == "plain.txt"][0]
    assert got == {"a/outer.zip/inner.zip/d/in.txt": b"inner", "a/outer.zip/o.txt": b"o",
                   "plain.txt": b"p", "t.tgz/q/x.txt": b"hi"}
    assert plain.file == tmp_path / "plain.txt" and not plain.in_archive
    assert snapshot(tmp_path) == before


def test_tree_reports_bad_archives_and_rar_without_unrar(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ULTRASAM_UNRAR", "no-such-unrar-program")
    put(tmp_path / "bad.zip", b"not a zip")
    put(tmp_path / "data.rar", b"Rar!\x1a\x07\x01\x00rest")
    put(tmp_path / "renamed.bin", b"Rar!\x1a\x07\x00rest")  # RAR detected by its signature
    put(tmp_path / "ok.txt", b"ok")
    seen: list[tuple[str, str]] = []
    entries = NativeTree(tmp_path, on_unreadable=lambda p, r: seen.append((p, r))).files()
    assert [e.path for e in entries] == ["ok.txt"]
    assert [p for p, _ in seen] == ["bad.zip", "data.rar", "renamed.bin"]
    assert all("unrar" in r for p, r in seen if p != "bad.zip")
    with pytest.raises(ArchiveError, match="bad.zip"):
        NativeTree(tmp_path).files()
    (tmp_path / "bad.zip").unlink()
    with pytest.raises(RarUnavailableError, match="apt-get install unrar"):
        NativeTree(tmp_path).files()
    assert _tree.archive_kind("x.TAR.GZ") == "tar" and _tree.archive_kind("x.png") is None


# -- helpers: volumes -----------------------------------------------------------------------------
@pytest.mark.parametrize("compressed,msb", [(False, False), (True, False), (False, True)])
def test_metaimage_reader(tmp_path: Path, compressed: bool, msb: bool) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4) - 5
    data, _ = mha_bytes(arr, compressed=compressed, msb=msb)
    vol = _volumes.read_metaimage(put(tmp_path / "v.mha", data))
    assert vol.array.dtype == np.int16 and np.array_equal(vol.array, arr)
    assert vol.spacing == (0.5, 0.5, 0.5)
    header, raw = mha_bytes(arr, compressed=compressed, msb=msb, data_file="v.raw")
    put(tmp_path / "v.raw", raw)
    assert np.array_equal(_volumes.read_metaimage(put(tmp_path / "v.mhd", header)).array, arr)
    with pytest.raises(ValueError, match="truncated|corrupt"):
        _volumes.read_metaimage(data[:-3])


def test_nifti_axes_reversed_and_slicing() -> None:
    arr = RNG.integers(0, 4, (5, 6, 7)).astype(np.uint8)  # T x Y x X
    vol = _volumes.read_nifti(nifti_gz(arr))
    assert vol.array.shape == (5, 6, 7) and np.array_equal(vol.array, arr)
    assert [i for i, s in _volumes.iter_slices(vol.array) if s.shape == (6, 7)] == list(range(5))
    with pytest.raises(ValueError):
        _volumes.read_nifti(b"\x1f\x8bbroken")
    with pytest.raises(ValueError):
        list(_volumes.iter_slices(np.zeros((3, 3))))


def test_pickled_npy_is_restricted() -> None:
    d = {"liver": np.ones((2, 2), bool), "nested": {"vein": np.zeros((2, 2))}}
    out = _volumes.read_pickled_npy(npy_bytes(d))
    assert set(out) == {"liver", "nested"} and out["liver"].all()

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.getcwd, ())

    with pytest.raises(ValueError, match="refusing"):
        _volumes.read_pickled_npy(npy_bytes(np.array(Evil(), dtype=object)))
    with pytest.raises(ValueError):
        _volumes.read_npy(npy_bytes(d))  # plain reader refuses pickles


def test_volume_to_uint8_is_per_volume() -> None:
    a = np.array([[[0.0, 0.5]], [[1.0, 0.25]]])
    assert _volumes.volume_to_uint8(a).tolist() == [[[0, 128]], [[255, 64]]]
    b = np.array([[[0, 1000]], [[500, 250]]], np.int32)
    assert _volumes.volume_to_uint8(b).tolist() == [[[0, 255]], [[128, 64]]]


# -- sources --------------------------------------------------------------------------------------
def test_us105(tmp_path: Path) -> None:
    root = tmp_path / "105US"
    for n in (1, 2, 3, 4):
        put(root / "Images" / f"{n}.png", scan())
    put(root / "Masks" / "1_mask.png", boxes(32, 40, [(2, 2, 8, 8), (20, 20, 28, 30)]))
    put(root / "Masks" / "2_mask.png", boxes(32, 40, [(5, 5, 15, 15)]))
    put(root / "Masks" / "3_mask.png", b"\x89PNG broken")
    put(root / "Masks" / "4_mask.png", boxes(16, 16, [(1, 1, 4, 4)]))
    w = run("us105", root)
    assert [im["source"] for im in w.images] == ["Images/1.png", "Images/2.png"]
    assert counts(w) == {"breast_lesion": 3}
    assert warned(w, "Masks/3_mask.png") and warned(w, "Images/4.png", "16x16")


def test_acouslic(tmp_path: Path) -> None:
    root = tmp_path / "acouslic"
    sweep = RNG.integers(0, 255, (5, 24, 32), dtype=np.uint8)
    lab = np.zeros_like(sweep)
    lab[1] = boxes(24, 32, [(2, 2, 10, 10)], 1)
    lab[3] = boxes(24, 32, [(2, 2, 6, 6), (12, 12, 20, 20)], 2)
    lab[4, 0, 0] = 3  # unknown code, only one on that frame
    uid = "0199616b-4f8e"
    put(root / "images" / "stacked_fetal_ultrasound" / f"{uid}.mha", mha_bytes(sweep, True)[0])
    put(root / "masks" / "stacked_fetal_abdomen" / f"{uid}.mha", mha_bytes(lab)[0])
    put(root / "images" / "stacked_fetal_ultrasound" / "bad.mha", mha_bytes(sweep)[0][:-50])
    put(root / "masks" / "stacked_fetal_abdomen" / "bad.mha", mha_bytes(lab)[0])
    w = run("acouslic", root)
    assert field(w, "frame") == [1, 3] and field(w, "group") == [uid, uid]
    assert field(w, "label") == ["optimal", "suboptimal"]
    assert counts(w) == {"fetal_abdomen": 3}
    assert warned(w, f"{uid}.mha", "[3]") and warned(w, "bad.mha", "truncated")


def test_asus_zip_flip_and_scale(tmp_path: Path) -> None:
    root = tmp_path / "ASUS"
    us = np.zeros((3, 16, 20, 1), np.float32)
    us[:, 0, 0, 0] = 0.5  # top-left when stored -> bottom-right once flipped back
    seg = np.zeros((3, 16, 20, 1), np.float32)
    seg[:, 0:4, 0:5, 0] = 1.0
    seg[2, 10:12, 10:12, 0] = 1.0
    seg[1, 15, 19, 0] = 7.0  # unknown code
    put(root / "DataArrays.zip", zip_bytes({
        "DataArrays/s01_ultrasound.npy": npy_bytes(us),
        "DataArrays/s01_segmentation.npy": npy_bytes(seg),
        "DataArrays/s02_ultrasound.npy": npy_bytes(us),
        "DataArrays/s02_segmentation.npy": npy_bytes(seg[:, :8]),
    }))
    w = run("asus", root, images_dir=tmp_path / "out")
    assert field(w, "frame") == [0, 1, 2] and set(field(w, "group")) == {"s01"}
    assert counts(w) == {"spine": 4}
    assert masks_of(w, 0, "spine")[0][12:16, 15:20].all()
    png = cv2.imread(str(tmp_path / "out" / w.images[0]["file_name"]), cv2.IMREAD_UNCHANGED)
    assert png[15, 19] == 128 and png[0, 0] == 0
    assert warned(w, "DataArrays.zip/DataArrays/s01_segmentation.npy", "[7]")
    assert warned(w, "s02_segmentation.npy", "does not match")


def test_aul_ignores_outline(tmp_path: Path) -> None:
    root = tmp_path / "AUL"
    square = [[2, 2], [12, 2], [12, 12], [2, 12]]
    for cls, p, n in (("Benign", "P1", 1), ("Normal", "P2", 2), ("Malignant", "P3", 3)):
        put(root / cls / p / "image" / f"{n}.jpg", scan())
        seg = root / cls / p / "segmentation"
        put(seg / "liver" / f"{n}.json", b"[[[1, 1], [30, 1], [30, 25], [1, 25]]]")
        put(seg / "outline" / f"{n}.json", b"[[[0, 0], [39, 0], [39, 31], [0, 31]]]")
    put(root / "Benign/P1/segmentation/mass/1.json",
        f"[{square}, [[20, 20], [25, 20], [25, 25]]]".encode())
    put(root / "Benign/P1/segmentation/vessel/1.json", b"[]")
    put(root / "Malignant/P3/segmentation/mass/3.json", b"{not json")
    w = run("aul", root)
    assert [c for c in w.structures] == ["liver", "liver_lesion"]
    assert field(w, "label") == ["benign", "normal"]
    assert field(w, "group") == ["Benign/P1", "Normal/P2"]
    assert counts(w) == {"liver": 2, "liver_lesion": 2}
    assert max(a["area"] for a in w.annotations) < 32 * 40  # the outline fan is not kept
    assert warned(w, "segmentation/vessel/1.json") and warned(w, "mass/3.json")


def test_abdomenus_colours_and_aus_skipped(tmp_path: Path) -> None:
    base = tmp_path / "abdominal_US"
    ann = np.zeros((32, 40, 3), np.uint8)
    ann[2:10, 2:10] = (100, 0, 100)
    ann[20:30, 20:30] = (255, 255, 0)
    ann[12:14, 30:32] = (10, 20, 30)  # unknown colour
    put(base / "RUS/images/train/a.png", scan())
    put(base / "RUS/annotations/train/a.png", ann)
    ann2 = np.zeros((32, 40, 3), np.uint8)
    ann2[5:9, 5:9] = (255, 0, 255)
    put(base / "RUS/images/test/b.jpg", scan())
    put(base / "RUS/annotations/test/b.png", ann2)
    put(base / "AUS/images/train/c.png", scan())
    put(base / "AUS/annotations/train/c.png", ann2)
    put(base / "RUS/images/train/d.png", b"garbage")
    put(base / "RUS/annotations/train/d.png", ann2)
    w = run("abdomenus", tmp_path)
    assert [im["source"] for im in w.images] == ["abdominal_US/RUS/images/test/b.jpg",
                                                 "abdominal_US/RUS/images/train/a.png"]
    assert field(w, "split") == ["test", "train"]
    assert counts(w) == {"liver": 1, "kidney": 1, "spleen": 1}
    assert warned(w, "annotations/train/a.png", "4 pixels of unknown colours")
    assert warned(w, "RUS/images/train/d.png")


def test_buid_zips(tmp_path: Path) -> None:
    mask = boxes(32, 40, [(2, 2, 10, 10)], 200) + boxes(32, 40, [(20, 20, 30, 30)], 100)
    put(tmp_path / "Benign.zip", zip_bytes({"Benign/1 Image.bmp": encode(scan(), ".bmp"),
                                            "Benign/1 Mask.tif": encode(mask, ".tif")}))
    put(tmp_path / "Malignant.zip", zip_bytes({
        "Malignant/2 Image.bmp": encode(scan(), ".bmp"),
        "Malignant/2 Mask.tif": encode(boxes(32, 40, [(1, 1, 5, 5), (9, 9, 12, 12)], 255),
                                       ".tif"),
        "Malignant/3 Image.bmp": encode(scan(), ".bmp"), "Malignant/3 Mask.tif": b"II*\x00bad"}))
    w = run("buid", tmp_path)
    assert field(w, "label") == ["benign", "malignant"]
    assert field(w, "source") == ["Benign.zip/Benign/1 Image.bmp",
                                  "Malignant.zip/Malignant/2 Image.bmp"]
    assert counts(w) == {"breast_lesion": 3}  # the grey-100 blob is below 150
    assert warned(w, "Malignant.zip/Malignant/3 Mask.tif")


def test_bus_b(tmp_path: Path) -> None:
    put(tmp_path / "original/000001.png", scan())
    put(tmp_path / "GT/000001.png", boxes(32, 40, [(2, 2, 10, 10)], 255)
        + boxes(32, 40, [(20, 20, 30, 30)], 120))
    put(tmp_path / "original/000002.png", scan())
    put(tmp_path / "GT/000002.png", boxes(30, 40, [(2, 2, 10, 10)]))
    w = run("bus_b", tmp_path)
    assert field(w, "source") == ["original/000001.png"] and counts(w) == {"breast_lesion": 1}
    assert warned(w, "original/000002.png", "40x30")


def test_bus_uc_resizes_masks(tmp_path: Path) -> None:
    root = tmp_path / "BUS_UC"
    put(root / "Benign/images/01.png", scan())
    put(root / "Benign/masks/01.png", boxes(64, 80, [(4, 4, 20, 20)]))  # twice the image size
    put(root / "Malignant/images/01.png", scan())
    put(root / "Malignant/masks/01.png", boxes(32, 40, [(4, 4, 10, 10), (20, 20, 25, 25)], 1))
    put(root / "Malignant/images/02.png", scan())
    w = run("bus_uc", root)
    assert field(w, "label") == ["benign", "malignant"]
    assert counts(w) == {"breast_lesion": 3}
    assert w.annotations[0]["area"] == 64  # 16x16 block resized to 8x8
    assert warned(w, "Benign/masks/01.png", "resized") and warned(w, "Malignant/images/02.png")


def test_breast(tmp_path: Path) -> None:
    root = tmp_path / "BrEaST-Lesions_USG-images_and_masks"
    put(root / "case001.png", scan())
    put(root / "case001_tumor.png", boxes(32, 40, [(2, 2, 10, 10)]))
    put(root / "case001_other.png", boxes(32, 40, [(20, 20, 30, 30)]))
    put(root / "case002.png", scan())
    put(root / "case002_tumor.png", boxes(32, 40, [(2, 2, 10, 10)]))
    put(root / "case002_tumor2.png", boxes(32, 40, [(20, 20, 30, 30)]))
    put(root / "case003.png", scan())
    put(root / "case003_weird.png", boxes(32, 40, [(2, 2, 10, 10)]))
    put(root / "case004.png", scan())
    put(root / "case004_tumor.png", boxes(20, 20, [(2, 2, 10, 10)]))
    w = run("breast", root)
    assert field(w, "group") == ["case001", "case002", "case003"]
    assert counts(w) == {"breast_lesion": 3, "breast_other_finding": 1}
    assert warned(w, "case003_weird.png") and warned(w, "case004_tumor.png", "does not match")


def test_camus(tmp_path: Path) -> None:
    root = tmp_path / "database_nifti"
    seq = RNG.integers(0, 255, (4, 24, 32), dtype=np.uint8)
    gt = np.zeros_like(seq)
    gt[:, 4:10, 6:12] = 1
    gt[:, 4:10, 12:14] = 2
    gt[:, 14:20, 6:12] = 3
    gt[2, 23, 31] = 7
    for view in ("2CH", "4CH"):
        put(root / "patient0001" / f"patient0001_{view}_half_sequence.nii.gz", nifti_gz(seq))
        put(root / "patient0001" / f"patient0001_{view}_half_sequence_gt.nii.gz", nifti_gz(gt))
    put(root / "patient0001" / "patient0001_2CH_ED.nii.gz", nifti_gz(seq[:1]))
    put(root / "patient0002" / "patient0002_2CH_half_sequence.nii.gz", nifti_gz(seq))
    w = run("camus", root)
    assert field(w, "frame") == [0, 1, 2, 3] * 2
    assert set(field(w, "group")) == {"patient0001"}
    assert counts(w) == {"left_ventricle": 8, "myocardium": 8, "left_atrium": 8}
    lv = [a for a in w.annotations if a["structure"] == "left_ventricle"][0]
    assert lv["bbox"] == [6.0, 4.0, 6.0, 6.0]  # x, y, w, h: rows stay rows after the transpose
    assert warned(w, "patient0001_2CH_half_sequence_gt.nii.gz", "[7]")
    assert warned(w, "patient0002_2CH_half_sequence.nii.gz", "_gt")


def test_cardiacudc_fills_contours(tmp_path: Path) -> None:
    video = RNG.integers(0, 255, (4, 24, 32), dtype=np.uint8)
    lab = np.zeros_like(video)
    lab[1, 2:12, 2:12] = 1
    lab[1, 3:11, 3:11] = 0  # contour only: a 10x10 square outline
    lab[3, 14:20, 20:28] = 4
    lab[3, 15:19, 21:27] = 0
    lab[3, 0, 31] = 9
    put(tmp_path / "Site_G" / "patient-1_image.nii.gz", nifti_gz(video))
    put(tmp_path / "Site_G" / "patient-1_label.nii.gz", nifti_gz(lab))
    put(tmp_path / "Site_G" / "patient-2_image.nii.gz", nifti_gz(video))
    put(tmp_path / "Site_G" / "patient-2_label.nii.gz", nifti_gz(lab[:, :10]))
    w = run("cardiacudc", tmp_path)
    assert field(w, "frame") == [1, 3] and set(field(w, "group")) == {"Site_G/patient-1"}
    assert counts(w) == {"left_ventricle": 1, "right_ventricle": 1}
    assert sorted(a["area"] for a in w.annotations) == [48, 100]  # filled, not outlines
    assert warned(w, "patient-1_label.nii.gz", "[9]")
    assert warned(w, "patient-2_label.nii.gz", "does not match")


def test_echonet_dynamic(tmp_path: Path) -> None:
    frames = [np.full((32, 32), 40 * i, np.uint8) for i in range(5)]
    avi(tmp_path / "Videos" / "0X1A.avi", frames)
    write_csv(tmp_path / "FileList.csv", ["FileName", "EF", "Split"], [["0X1A", "60", "TRAIN"]])
    rows: list[list[object]] = []
    for frame in (3, 1, 9):
        rows.append(["0X1A.avi", 16, 2, 16, 30, frame])  # long axis: must be excluded
        rows += [["0X1A.avi", 8, y, 24, y, frame] for y in (10, 15, 20)]
    rows.append(["0X2B.avi", 1, 1, 5, 5, 0])
    write_csv(tmp_path / "VolumeTracings.csv", ["FileName", "X1", "Y1", "X2", "Y2", "Frame"],
              rows)
    w = run("echonet_dynamic", tmp_path)
    assert field(w, "frame") == [1, 3] and field(w, "group") == ["0x1a", "0x1a"]
    assert field(w, "split") == ["train", "train"]
    assert counts(w) == {"left_ventricle": 2}
    assert w.annotations[0]["bbox"] == [8.0, 10.0, 17.0, 11.0]  # y 10..20: long axis left out
    assert warned(w, "Videos/0X1A.avi", "frame 9") and warned(w, "VolumeTracings.csv", "0x2b")


def test_echonet_pediatric(tmp_path: Path) -> None:
    frames = [np.full((32, 32), 30 * i, np.uint8) for i in range(4)]
    square = [(6, 6), (20, 6), (20, 20), (6, 20)]
    for view, name, traced in (("A4C", "CR32a.avi", (1, 4)), ("PSAX", "CR32b.avi", (2, 0))):
        avi(tmp_path / view / "Videos" / name, frames)
        write_csv(tmp_path / view / "VolumeTracings.csv", ["FileName", "X", "Y", "Frame"],
                  [[name, x, y, f] for f in traced for x, y in square])
    w = run("echonet_pediatric", tmp_path)
    assert field(w, "frame") == [0, 3, 1]  # 1-based in the CSV, 0-based indices here
    assert field(w, "group") == ["cr32a", "cr32a", "cr32b"]
    assert [im["file_name"].split("__")[1] for im in w.images] == ["A4C", "A4C", "PSAX"]
    assert counts(w) == {"left_ventricle": 3}
    assert warned(w, "PSAX/VolumeTracings.csv", "1-based")


def test_fallmud_keeps_fascicles_and_rotates(tmp_path: Path) -> None:
    nc = tmp_path / "NeilCronin"
    put(nc / "images/im1.png", scan())
    put(nc / "aponeurosis_masks/im1.png", boxes(32, 40, [(1, 0, 3, 40), (28, 0, 30, 40)]))
    put(nc / "fascicle_masks/im1.png", boxes(32, 40, [(8, 2, 9, 30), (14, 2, 15, 30),
                                                      (20, 2, 21, 30)]))
    rc = tmp_path / "RyanCunningham"
    put(rc / "images/r1.png", scan(32, 48))
    rotated = np.rot90(boxes(32, 48, [(2, 30, 6, 46)]), 1)  # stored 48 x 32
    put(rc / "fascicle_masks/r1.png", np.ascontiguousarray(rotated))
    put(rc / "images/r2.png", scan())
    put(rc / "aponeurosis_masks/r2.png", b"broken")
    w = run("fallmud", tmp_path)
    assert counts(w) == {"aponeurosis": 2, "muscle_fascicle": 4}
    assert masks_of(w, 1, "muscle_fascicle")[0][2:6, 30:46].all()
    assert warned(w, "RyanCunningham/fascicle_masks/r1.png", "rotated")
    assert warned(w, "RyanCunningham/aponeurosis_masks/r2.png")


def test_fass_pickled_dicts(tmp_path: Path) -> None:
    def m(*rects: tuple[int, int, int, int]) -> np.ndarray:
        return boxes(32, 40, list(rects), 1)

    put(tmp_path / "IMAGES/P001_IMG1.png", scan())
    put(tmp_path / "ARRAY_FORMAT/P001_IMG1.npy", npy_bytes({
        "image": scan(), "artery": m((1, 1, 4, 4)), "liver": m((10, 10, 30, 30)),
        "stomach": m((2, 20, 6, 30)), "vein": m((25, 1, 30, 4), (28, 6, 31, 9))}))
    put(tmp_path / "IMAGES/P002_IMG1.png", scan())
    put(tmp_path / "ARRAY_FORMAT/P002_IMG1.npy", npy_bytes(
        {"structures": {"LIVER": m((3, 3, 9, 9)), "spleen": m((20, 20, 25, 25))}}))
    put(tmp_path / "IMAGES/P003_IMG1.png", scan())
    put(tmp_path / "ARRAY_FORMAT/P003_IMG1.npy", npy_bytes({"liver": np.ones((8, 8), np.uint8)}))
    w = run("fass", tmp_path)
    assert field(w, "group") == ["P001", "P002"]
    assert counts(w) == {"artery": 1, "liver": 2, "stomach": 1, "vein": 2}
    assert warned(w, "P002_IMG1.npy", "'spleen'") and warned(w, "P003_IMG1.png", "8x8")


def test_fast_unet_extracted_and_rar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ULTRASAM_UNRAR", "no-such-unrar-program")
    root = tmp_path / "Fast-U-Net"
    put(root / "AC/images/1.png", scan())
    put(root / "AC/masks/1_mask.png", boxes(32, 40, [(4, 4, 20, 30)]))
    ring = np.zeros((32, 40), np.uint8)
    cv2.ellipse(ring, (20, 16), (12, 8), 0, 0, 360, 255, 1)
    put(root / "HC/images/5_HC.png", scan())
    put(root / "HC/masks/5_HC_Annotation.png", ring)
    put(root / "HC.rar", b"Rar!\x1a\x07\x00more")
    w = run("fast_unet", root)
    assert counts(w) == {"fetal_abdomen": 1, "fetal_head": 1}
    head = [a for a in w.annotations if a["structure"] == "fetal_head"][0]
    assert head["area"] > 250  # the outline was filled (an outline alone is ~60 px)
    assert warned(w, "HC.rar", "unrar")
    only_rar = tmp_path / "rar-only"
    put(only_rar / "AC.rar", b"Rar!\x1a\x07\x00more")
    with pytest.raises(RuntimeError, match="unrar"):
        run("fast_unet", only_rar)


def test_fh_ps_aop(tmp_path: Path) -> None:
    root = tmp_path / "FH-PS-AOP"
    plane = scan(24, 32)
    image = np.stack([plane] * 3)
    lab = boxes(24, 32, [(2, 2, 8, 8)], 1) + boxes(24, 32, [(10, 10, 20, 28)], 2)
    for stem, label in (("00001", lab), ("00002", lab + boxes(24, 32, [(0, 30, 1, 32)], 5))):
        put(root / "image_mha" / f"{stem}.mha", mha_bytes(image)[0])
        put(root / "label_mha" / f"{stem}.mha", mha_bytes(label)[0])
    put(root / "image_mha/00003.mha", mha_bytes(image)[0][:-10])
    put(root / "label_mha/00003.mha", mha_bytes(lab)[0])
    w = run("fh_ps_aop", root, images_dir=tmp_path / "out")
    assert field(w, "source") == ["image_mha/00001.mha", "image_mha/00002.mha"]
    assert counts(w) == {"pubic_symphysis": 2, "fetal_head": 2}
    png = cv2.imread(str(tmp_path / "out" / w.images[0]["file_name"]), cv2.IMREAD_UNCHANGED)
    assert png.shape == (24, 32) and np.array_equal(png, plane)  # one of the 3 identical planes
    assert warned(w, "label_mha/00002.mha", "[5]") and warned(w, "image_mha/00003.mha")


def test_fh_ps_aop_reads_real_psfhs_sibling(native_samples: Path) -> None:
    root = native_samples / "PSFHS"
    if not root.is_dir():
        pytest.skip(f"PSFHS native samples not found at {root}")
    w = run("fh_ps_aop", root)
    n = len(list((root / "image_mha").glob("*.mha")))
    assert len(w.images) == n and not w.warnings
    for i in range(n):
        assert masks_of(w, i, "fetal_head") and masks_of(w, i, "pubic_symphysis")
