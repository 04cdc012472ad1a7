"""Frame sequences: DICOM cines (pydicom's real ultrasound cine and files made here), volumes,
videos, folders of frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ultrasam.io import load_image
from ultrasam.io.video import FrameSequence, dicom_frame_times, natural_key, open_frames

pydicom = pytest.importorskip("pydicom")
examples = pytest.importorskip("pydicom.examples")
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CINE = examples.get_path("ybr_color")  # 30-frame YBR_FULL_422 ultrasound cine, FrameTime 33.333


def _write_cine(path: Path, frames: np.ndarray, **elements: object) -> Path:
    """An uncompressed MONOCHROME2 multi-frame DICOM (N x H x W uint8)."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # US Multi-frame Image
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.NumberOfFrames = frames.shape[0]
    ds.Rows, ds.Columns = frames.shape[1:3]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _frames(n: int = 4, h: int = 20, w: int = 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)


# --------------------------------------------------------------------------- DICOM


def test_pydicom_cine_frames_times_and_refused_calibration() -> None:
    seq = open_frames(CINE)
    assert (seq.kind, len(seq), seq.size) == ("dicom", 30, (240, 320))
    # FrameTime 33.333 ms, pointed to by FrameIncrementPointer.
    assert seq.meta["timing"] == "FrameTime"
    np.testing.assert_allclose(seq.times_s, np.arange(30) * 0.033333, rtol=0, atol=1e-12)
    for k in (0, 13, 29, -1):
        assert np.array_equal(seq[k], load_image(CINE, frame=k % 30).rgb)
    # Its ultrasound region lies outside the 320 x 240 frame: the reader refuses it.
    assert seq.spacing_mm is None and seq.calibration.source is None
    assert any("resized or cropped" in w for w in seq.warnings)
    with pytest.raises(IndexError, match="30 frames"):
        seq[30]


def test_dicom_frame_time_attributes_in_order() -> None:
    ds = Dataset()
    assert dicom_frame_times(ds, 3) == (None, None)
    ds.CineRate = 25
    times, source = dicom_frame_times(ds, 3)
    assert source == "CineRate" and np.allclose(times, [0, 0.04, 0.08])
    ds.FrameTime = 50.0
    times, source = dicom_frame_times(ds, 3)
    assert source == "FrameTime" and np.allclose(times, [0, 0.05, 0.1])
    ds.FrameTimeVector = [0, 40, 60]  # unequal increments: times are their running sum
    times, source = dicom_frame_times(ds, 3)
    assert source == "FrameTimeVector" and np.allclose(times, [0, 0.04, 0.1])
    ds.FrameIncrementPointer = 0x00181063  # the header says FrameTime is the increment
    times, source = dicom_frame_times(ds, 3)
    assert source == "FrameTime" and np.allclose(times, [0, 0.05, 0.1])
    ds.FrameTimeVector = [0, 40]  # wrong length for 3 frames: not used
    del ds.FrameIncrementPointer
    assert dicom_frame_times(ds, 3)[1] == "FrameTime"


def test_written_cine_with_a_frame_time_vector(tmp_path: Path) -> None:
    frames = _frames()
    path = _write_cine(tmp_path / "c.dcm", frames, FrameTimeVector=[0, 30, 35, 40],
                       FrameIncrementPointer=0x00181065)
    seq = open_frames(path)
    assert len(seq) == 4 and seq.size == (20, 30)
    np.testing.assert_allclose(seq.times_s, [0, 0.03, 0.065, 0.105])
    for k in range(4):
        assert np.array_equal(seq[k][..., 0], frames[k])


def test_cine_without_timing_says_so(tmp_path: Path) -> None:
    seq = open_frames(_write_cine(tmp_path / "c.dcm", _frames()))
    assert seq.times_s is None and any("no frame timing" in w for w in seq.warnings)
    seq = open_frames(tmp_path / "c.dcm", fps=10)
    np.testing.assert_allclose(seq.times_s, [0, 0.1, 0.2, 0.3])


# --------------------------------------------------------------------------- volumes


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_nifti_frames_are_load_image_slices(tmp_path: Path, axis: int) -> None:
    nib = pytest.importorskip("nibabel")
    data = np.random.default_rng(1).integers(0, 256, size=(7, 5, 4), dtype=np.uint8)  # x, y, z
    img = nib.Nifti1Image(data, np.diag([0.5, 0.6, 2.0, 1.0]))
    img.header.set_xyzt_units("mm")
    path = tmp_path / "v.nii.gz"
    nib.save(img, str(path))
    seq = open_frames(path, axis=axis)
    assert len(seq) == (4, 5, 7)[axis] and seq.kind == "volume"
    for k in range(len(seq)):
        ref = load_image(path, slice=k, axis=axis)
        assert np.array_equal(seq[k], ref.rgb)
        assert seq.spacing_mm == pytest.approx(ref.spacing_mm)
    step = (2.0, 0.6, 0.5)[axis]
    np.testing.assert_allclose(seq.positions_mm, np.arange(len(seq)) * step)


def test_volume_uses_one_intensity_window(tmp_path: Path) -> None:
    """A structure of constant value keeps one grey level across slices of unequal range."""
    nib = pytest.importorskip("nibabel")
    data = np.zeros((8, 8, 3), np.uint16)
    data[2:5, 2:5, :] = 1000
    data[0, 0, 0] = 4000  # only slice 0 reaches the maximum
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "v.nii"))
    seq = open_frames(tmp_path / "v.nii")
    levels = {int(seq[k][3, 3, 0]) for k in range(3)}
    assert levels == {round(255 * 1000 / 4000)}
    # Per-slice scaling (load_image) would have made slices 1 and 2 full white there.
    assert int(load_image(tmp_path / "v.nii", slice=1).rgb[3, 3, 0]) == 255


def test_metaimage_volume(tmp_path: Path) -> None:
    vol = np.random.default_rng(2).integers(0, 256, size=(3, 6, 5), dtype=np.uint8)  # z, y, x
    header = (b"ObjectType = Image\nNDims = 3\nDimSize = 5 6 3\nElementType = MET_UCHAR\n"
              b"ElementSpacing = 0.4 0.3 1.5\nElementDataFile = LOCAL\n")
    path = tmp_path / "v.mha"
    path.write_bytes(header + vol.tobytes())
    seq = open_frames(path)
    assert len(seq) == 3 and seq.spacing_mm == pytest.approx((0.3, 0.4))
    assert all(np.array_equal(seq[k][..., 0], vol[k]) for k in range(3))
    np.testing.assert_allclose(seq.positions_mm, [0, 1.5, 3.0])
    with pytest.raises(ValueError, match="byte limit"):
        open_frames(path, max_bytes=10)


# --------------------------------------------------------------------------- video, folders


def test_video_file_frames_and_rate(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12.5, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG AVI files")
    levels = [20, 80, 140, 200, 250]
    for v in levels:
        frame = np.full((48, 64, 3), v, np.uint8)
        frame[..., 0] = 10  # blue channel low: checks the BGR -> RGB order
        writer.write(frame)
    writer.release()
    seq = open_frames(path)
    assert seq.kind == "video" and len(seq) == 5 and seq.size == (48, 64)
    np.testing.assert_allclose(seq.times_s, np.arange(5) / 12.5, rtol=1e-6)
    for k, v in enumerate(levels):
        rgb = seq[k].astype(int)
        assert abs(rgb[..., 0].mean() - v) < 6 and abs(rgb[..., 2].mean() - 10) < 6
    with pytest.raises(ValueError, match="byte limit"):
        open_frames(path, max_bytes=48 * 64 * 3 * 2)


def test_folder_in_natural_name_order(tmp_path: Path) -> None:
    for i in (10, 2, 1):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((6, 8), i * 10, np.uint8))
    (tmp_path / "notes.txt").write_text("not a frame")
    cv2.imwrite(str(tmp_path / ".hidden.png"), np.zeros((6, 8), np.uint8))
    seq = open_frames(tmp_path)
    assert seq.kind == "folder" and seq.meta["files"] == ["f1.png", "f2.png", "f10.png"]
    assert [int(seq[k][0, 0, 0]) for k in range(3)] == [10, 20, 100]
    assert seq.times_s is None and seq.spacing_mm is None
    seq = open_frames(tmp_path, fps=5, spacing_mm=(0.2, 0.3))
    np.testing.assert_allclose(seq.times_s, [0, 0.2, 0.4])
    assert seq.spacing_mm == (0.2, 0.3)
    cv2.imwrite(str(tmp_path / "f11.png"), np.zeros((7, 8), np.uint8))
    with pytest.raises(ValueError, match="share one size"):
        open_frames(tmp_path)[3]


def test_natural_key() -> None:
    names = ["img10.png", "img2.png", "img1.png", "Img3.png", "img02.png"]
    assert sorted(names, key=natural_key) == ["img1.png", "img02.png", "img2.png", "Img3.png",
                                              "img10.png"]


def test_arrays_and_bad_inputs(tmp_path: Path) -> None:
    seq = FrameSequence.from_arrays(np.zeros((3, 5, 6), np.uint8), times_s=[0, 1, 2],
                                    spacing_mm=(1, 2))
    assert len(seq) == 3 and seq[2].shape == (5, 6, 3) and seq.spacing_mm == (1.0, 2.0)
    with pytest.raises(ValueError, match="times_s"):
        FrameSequence.from_arrays(np.zeros((3, 5, 6), np.uint8), times_s=[0, 2, 1])
    with pytest.raises(ValueError, match="no frames"):
        FrameSequence.from_arrays([])
    with pytest.raises(TypeError, match="int"):
        seq[1.0]  # type: ignore[index]
    with pytest.raises(FileNotFoundError):
        open_frames(tmp_path / "missing.dcm")
    with pytest.raises(ValueError, match="no image frames"):
        open_frames(tmp_path)
    with pytest.raises(ValueError, match="axis applies to volumes"):
        open_frames(CINE, axis=1)
    with pytest.raises(ValueError, match="fps"):
        open_frames(CINE, fps=0)
    with pytest.raises(ValueError, match="spacing_mm"):
        open_frames(CINE, spacing_mm=(0.1, -1))
    seq = open_frames(CINE, fps=10, spacing_mm=(0.5, 0.5))
    assert seq.times_s[1] == pytest.approx(0.1) and seq.spacing_mm == (0.5, 0.5)
    assert any("replaced" in w for w in seq.warnings)
