"""NIfTI and MetaImage slices: axis order, spacing, errors; files generated in tmp_path."""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from ultrasam.io import load_image, to_rgb_uint8
from ultrasam.io.volumes import read_metaimage

nib = pytest.importorskip("nibabel")

# A volume in nibabel order (x, y, z) = (12, 10, 7) whose voxels are all distinct.
XYZ = np.arange(12 * 10 * 7, dtype=np.int16).reshape(12, 10, 7)
ZOOMS = (0.5, 0.6, 0.7)


def _nifti(path: Path, data: np.ndarray = XYZ, unit: str | None = "mm",
           zooms: tuple[float, ...] = ZOOMS) -> Path:
    img = nib.Nifti1Image(data, np.diag([*zooms, *(1.0,) * (4 - len(zooms))]))
    img.header.set_zooms(zooms[: data.ndim])
    if unit is not None:
        img.header.set_xyzt_units(xyz=unit)
    nib.save(img, path)
    return path


def _mha(path: Path, zyx: np.ndarray, spacing_xyz: tuple[float, ...], etype: str,
         compressed: bool = False, msb: bool = False, separate: bool = False) -> Path:
    payload = zyx.astype(zyx.dtype.newbyteorder(">" if msb else "<")).tobytes()
    if compressed:
        payload = zlib.compress(payload)
    dims = " ".join(str(s) for s in zyx.shape[::-1])
    header = (f"ObjectType = Image\nNDims = {zyx.ndim}\nBinaryData = True\n"
              f"BinaryDataByteOrderMSB = {msb}\nCompressedData = {compressed}\n"
              f"ElementSpacing = {' '.join(map(str, spacing_xyz))}\nDimSize = {dims}\n"
              f"ElementType = {etype}\n")
    if separate:
        raw = path.with_suffix(".raw")
        raw.write_bytes(payload)
        path.write_text(header + f"ElementDataFile = {raw.name}\n")
    else:
        path.write_bytes((header + "ElementDataFile = LOCAL\n").encode() + payload)
    return path


@pytest.mark.parametrize("name", ["vol.nii", "vol.nii.gz"])
def test_nifti_slices_follow_itk_order(tmp_path: Path, name: str) -> None:
    path = _nifti(tmp_path / name)
    cases = {0: (XYZ[:, :, 3].T, (0.6, 0.5)),   # z fixed: rows y, columns x
             1: (XYZ[:, 3, :].T, (0.7, 0.5)),   # y fixed: rows z, columns x
             2: (XYZ[3, :, :].T, (0.7, 0.6))}   # x fixed: rows z, columns y
    for axis, (expected, spacing) in cases.items():
        li = load_image(path, slice=3, axis=axis)
        assert li.rgb.shape[:2] == expected.shape
        assert np.array_equal(li.rgb, to_rgb_uint8(expected))
        assert li.spacing_mm == pytest.approx(spacing)
        assert li.meta["slice"] == 3 and li.meta["axis"] == axis and li.warnings == []


def test_nifti_and_metaimage_agree(tmp_path: Path) -> None:
    nii = _nifti(tmp_path / "v.nii")
    mha = _mha(tmp_path / "v.mha", XYZ.transpose(2, 1, 0).copy(), ZOOMS, "MET_SHORT")
    for axis in (0, 1, 2):
        a = load_image(nii, slice=2, axis=axis)
        b = load_image(mha, slice=2, axis=axis)
        assert np.array_equal(a.rgb, b.rgb)
        assert a.spacing_mm == pytest.approx(b.spacing_mm)


def test_nifti_defaults_ranges_and_units(tmp_path: Path) -> None:
    path = _nifti(tmp_path / "v.nii.gz")
    li = load_image(path)
    assert li.meta["slice"] == 3 and "middle slice 3" in li.warnings[0]
    with pytest.raises(ValueError, match=r"valid slices are 0\.\.6"):
        load_image(path, slice=7)
    with pytest.raises(ValueError, match=r"valid slices are 0\.\.11"):
        load_image(path, slice=12, axis=2)
    with pytest.raises(ValueError, match="axis must be 0, 1 or 2"):
        load_image(path, slice=0, axis=3)
    with pytest.raises(ValueError, match="slice="):
        load_image(path, frame=1)
    unknown = load_image(_nifti(tmp_path / "u.nii", unit=None), slice=1)
    assert unknown.spacing_mm is None and "no spatial unit" in unknown.warnings[0]
    metres = load_image(_nifti(tmp_path / "m.nii", unit="meter", zooms=(0.001, 0.002, 0.003)),
                        slice=1)
    assert metres.spacing_mm == pytest.approx((2.0, 1.0))


def test_nifti_2d_and_float(tmp_path: Path) -> None:
    xy = np.linspace(0, 1, 20 * 16, dtype=np.float32).reshape(20, 16)
    li = load_image(_nifti(tmp_path / "flat.nii", data=xy, zooms=(0.3, 0.4)))
    assert li.rgb.shape == (16, 20, 3) and li.warnings == []
    assert np.array_equal(li.rgb, to_rgb_uint8(xy.T))
    assert li.spacing_mm == pytest.approx((0.4, 0.3))


def test_corrupt_nifti(tmp_path: Path) -> None:
    path = _nifti(tmp_path / "v.nii")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    with pytest.raises(ValueError, match="v.nii"):
        load_image(path, slice=6)


def test_metaimage_variants(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    zyx = rng.integers(0, 4000, (4, 9, 11)).astype(np.uint16)
    for kw in ({}, {"compressed": True}, {"msb": True}, {"separate": True}):
        path = _mha(tmp_path / f"v{len(list(tmp_path.iterdir()))}.mhd", zyx, (0.2, 0.3, 1.5),
                    "MET_USHORT", **kw)  # type: ignore[arg-type]
        array, spacing, _ = read_metaimage(path)
        assert np.array_equal(array, zyx), kw
        li = load_image(path, slice=1)
        assert np.array_equal(li.rgb, to_rgb_uint8(zyx[1])) and li.spacing_mm == (0.3, 0.2)
    flat = _mha(tmp_path / "flat.mha", zyx[0].astype(np.float32) / 4000, (1, 1), "MET_FLOAT")
    li = load_image(flat)
    assert li.rgb.shape == (9, 11, 3) and any("placeholder" in w for w in li.warnings)


def test_metaimage_errors(tmp_path: Path) -> None:
    zyx = np.zeros((2, 8, 8), np.uint8)
    path = _mha(tmp_path / "cut.mha", zyx, (1, 1, 1), "MET_UCHAR")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated MetaImage data"):
        load_image(path)
    bad = _mha(tmp_path / "bad.mha", zyx, (1, 1, 1), "MET_UNKNOWNTYPE")
    with pytest.raises(ValueError, match="ElementType"):
        load_image(bad)
    orphan = _mha(tmp_path / "orphan.mhd", zyx, (1, 1, 1), "MET_UCHAR", separate=True)
    orphan.with_suffix(".raw").unlink()
    with pytest.raises(FileNotFoundError, match="orphan.raw"):
        load_image(orphan)


def test_missing_nibabel_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _nifti(tmp_path / "v.nii")
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(ImportError, match=r"pip install ultrasam\[volumes\]"):
        load_image(path, slice=0)


def test_real_psfhs_metaimage(native_samples: Path) -> None:
    path = sorted((native_samples / "PSFHS" / "image_mha").glob("*.mha"))[0]
    li = load_image(path, slice=0)
    assert li.rgb.shape == (256, 256, 3) and li.meta["volume_shape_zyx"] == (3, 256, 256)
    assert li.rgb.std() > 5  # a real image, not a blank plane
