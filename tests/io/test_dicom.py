"""DICOM frames and calibration, on pydicom's bundled real ultrasound files and on files made here."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
examples = pytest.importorskip("pydicom.examples")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.pixels import apply_color_lut, pixel_array  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from ultrasam.io import load_image  # noqa: E402
from ultrasam.io.dicom import (  # noqa: E402
    Calibration, mask_area_mm2, read_calibration, region_spacing_for_mask)

CINE = examples.get_path("ybr_color")  # 30-frame JPEG baseline YBR_FULL_422 ultrasound cine


def _region(x0: int, y0: int, x1: int, y1: int, delta_cm: float, units: int = 3) -> Dataset:
    r = Dataset()
    r.RegionLocationMinX0, r.RegionLocationMinY0 = x0, y0
    r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x1, y1
    r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = units
    r.PhysicalDeltaX = r.PhysicalDeltaY = delta_cm
    r.RegionSpatialFormat, r.RegionDataType = 1, 1
    return r


def _write(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2",
           **elements: object) -> Path:
    """An uncompressed single-frame image DICOM."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # US Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 1 if pixels.ndim == 2 else pixels.shape[2]
    if ds.SamplesPerPixel > 1:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------- frames


def test_cine_frames_match_pydicoms_own_rgb_conversion() -> None:
    ds = pydicom.dcmread(CINE)
    assert ds.PhotometricInterpretation == "YBR_FULL_422" and int(ds.NumberOfFrames) == 30
    for k in (0, 17, 29):
        li = load_image(CINE, frame=k)
        reference = pixel_array(CINE, index=k)  # pydicom's YBR -> RGB
        assert li.rgb.shape == (240, 320, 3) and li.rgb.dtype == np.uint8
        assert np.abs(li.rgb.astype(int) - reference.astype(int)).max() <= 1
        assert li.meta["frame"] == k and li.meta["n_frames"] == 30
    raw = pixel_array(CINE, index=17, raw=True)
    assert np.abs(raw.astype(int) - load_image(CINE, frame=17).rgb).max() > 50  # it did convert
    assert not np.array_equal(load_image(CINE, frame=0).rgb, load_image(CINE, frame=29).rgb)


def test_cine_is_decoded_one_frame_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom.pixels

    calls: list[object] = []
    real = pydicom.pixels.pixel_array

    def spy(src: object, **kw: object) -> np.ndarray:
        calls.append(kw.get("index"))
        out = real(src, **kw)
        assert out.ndim == 3  # one frame (rows, cols, samples), not (frames, ...)
        return out

    monkeypatch.setattr(pydicom.pixels, "pixel_array", spy)
    load_image(CINE, frame=5)
    assert calls == [5]


def test_frame_default_and_range() -> None:
    li = load_image(CINE)
    assert li.meta["frame"] == 0 and any("30 frames" in w for w in li.warnings)
    with pytest.raises(ValueError, match=r"frame 30 is out of range; valid frames are 0\.\.29"):
        load_image(CINE, frame=30)
    with pytest.raises(ValueError, match="out of range"):
        load_image(CINE, frame=-1)
    with pytest.raises(TypeError, match="frame must be an int"):
        load_image(CINE, frame=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="volumes"):
        load_image(CINE, slice=2)


def test_rgb_palette_and_jpeg2000_examples() -> None:
    rgb_path = examples.get_path("rgb_color")
    assert np.array_equal(load_image(rgb_path).rgb, pixel_array(rgb_path))
    j2k_path = examples.get_path("jpeg2k")  # YBR_RCT: the decoder returns RGB
    li = load_image(j2k_path)
    assert li.meta["photometric"] == "YBR_RCT"
    assert np.abs(li.rgb.astype(int) - pixel_array(j2k_path).astype(int)).max() <= 1
    pal_path = examples.get_path("palette_color")
    ds = pydicom.dcmread(pal_path)
    expected = (apply_color_lut(ds.pixel_array, ds) >> 8).astype(np.uint8)
    li = load_image(pal_path)
    assert li.rgb.shape == (350, 800, 3) and np.array_equal(li.rgb, expected)
    assert len(np.unique(li.rgb.reshape(-1, 3), axis=0)) > 2  # colours, not grey


def test_monochrome1_is_inverted_and_16_bit_scaled(tmp_path: Path) -> None:
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    m1 = load_image(_write(tmp_path / "m1.dcm", grey, "MONOCHROME1"))
    assert np.array_equal(m1.rgb[..., 0], 255 - grey)
    m2 = load_image(_write(tmp_path / "m2.dcm", grey, "MONOCHROME2"))
    assert np.array_equal(m2.rgb[..., 0], grey)
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 40 + 1000)
    li = load_image(_write(tmp_path / "deep.dcm", deep, PixelSpacing=[0.2, 0.3]))
    assert li.rgb[0, 0, 0] == 0 and li.rgb[-1, -1, 0] == 255
    assert li.spacing_mm == (0.2, 0.3)
    assert any("PixelSpacing" in w and "ultrasound" in w for w in li.warnings)


def test_corrupt_truncated_and_non_image_dicom(tmp_path: Path) -> None:
    data = Path(CINE).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.dcm.*(corrupt|truncated)"):
        load_image(cut, frame=25)
    header_only = tmp_path / "header.dcm"
    header_only.write_bytes(data[:400])
    with pytest.raises(ValueError, match="header.dcm"):
        load_image(header_only)
    with pytest.raises(ValueError, match="no image"):
        load_image(examples.get_path("rt_plan"))


def test_missing_pydicom_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ImportError, match=r"pip install ultrasam\[dicom\]"):
        load_image(CINE)


# --------------------------------------------------------------------------- calibration


def test_example_cine_calibration_is_refused_with_the_reason() -> None:
    li = load_image(CINE, frame=3)
    assert li.spacing_mm is None
    assert any("region 0" in w and "595" in w and "320x240" in w for w in li.warnings)
    cal = li.meta["calibration"]
    assert isinstance(cal, Calibration) and cal.regions == ()
    mask = np.zeros((240, 320), bool)
    mask[100:120, 100:130] = True
    area, warnings = mask_area_mm2(mask, cal)
    assert area is None and warnings


def test_regions_inside_the_frame_calibrate(tmp_path: Path) -> None:
    ds = pydicom.dcmread(CINE)  # the real cine, its regions moved inside the frame
    delta = float(ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaX)
    reg = ds.SequenceOfUltrasoundRegions[0]
    reg.RegionLocationMinX0, reg.RegionLocationMinY0 = 20, 10
    reg.RegionLocationMaxX1, reg.RegionLocationMaxY1 = 300, 230
    path = tmp_path / "calibrated.dcm"
    ds.save_as(path)
    li = load_image(path, frame=2)
    assert li.spacing_mm == pytest.approx((delta * 10, delta * 10))
    mask = np.zeros((240, 320), bool)
    mask[50:60, 40:60] = True
    area, warnings = mask_area_mm2(mask, li.meta["calibration"])
    assert area == pytest.approx(200 * (delta * 10) ** 2) and warnings == []
    outside = np.zeros((240, 320), bool)
    outside[0:5, 0:5] = True  # above and left of the region
    assert mask_area_mm2(outside, li.meta["calibration"])[0] is None


def test_mask_must_lie_in_one_region() -> None:
    ds = Dataset()
    ds.SequenceOfUltrasoundRegions = [_region(0, 0, 49, 99, 0.01), _region(50, 0, 99, 99, 0.02),
                                      _region(0, 0, 99, 99, 0.5, units=4)]  # a time axis region
    cal = read_calibration(ds, rows=100, cols=100)
    assert cal.spacing_mm is None and len(cal.regions) == 2
    assert any("different spacings" in w for w in cal.warnings)
    left = np.zeros((100, 100), bool)
    left[10:20, 10:20] = True
    assert region_spacing_for_mask(left, cal) == ((0.1, 0.1), [])
    right = np.zeros((100, 100), bool)
    right[10:20, 60:70] = True
    assert mask_area_mm2(right, cal)[0] == pytest.approx(100 * 0.2 * 0.2)
    across = left | right
    spacing, warnings = region_spacing_for_mask(across, cal)
    assert spacing is None and "single calibrated" in warnings[0]
    assert region_spacing_for_mask(np.zeros((100, 100), bool), cal)[0] is None
    with pytest.raises(ValueError, match="HxW"):
        region_spacing_for_mask(np.zeros((2, 100, 100), bool), cal)


def test_one_past_the_end_bound_is_accepted_and_units_checked() -> None:
    ds = Dataset()
    ds.SequenceOfUltrasoundRegions = [_region(0, 0, 100, 80, 0.03)]  # Max == size
    cal = read_calibration(ds, rows=80, cols=100)
    assert cal.spacing_mm == pytest.approx((0.3, 0.3)) and cal.regions[0].x1 == 99
    ds.SequenceOfUltrasoundRegions = [_region(0, 0, 99, 79, 0.03, units=2)]  # dB, not cm
    cal = read_calibration(ds, rows=80, cols=100)
    assert cal.spacing_mm is None and any("cm" in w for w in cal.warnings)
    ds = Dataset()
    ds.ImagerPixelSpacing = [0.1, 0.1]
    cal = read_calibration(ds, rows=80, cols=100)
    assert cal.source == "ImagerPixelSpacing" and "detector" in cal.warnings[0]
