"""Frame sequences: cine loops, volumes, videos and folders of frames, read as one ordered list.

:func:`open_frames` turns any of these into a :class:`FrameSequence` (``len``, ``seq[k]`` ->
H x W x 3 uint8 RGB, frame times, pixel spacing):

* **Multi-frame DICOM** (a cine): frames are decoded one at a time by
  :func:`ultrasam.io.dicom.load_dicom` (never the whole cine). Frame times, in seconds from the
  first frame, come from the header in this order: the attribute named by
  FrameIncrementPointer when it is FrameTime or FrameTimeVector; otherwise FrameTimeVector
  (milliseconds between frames, one value per frame; the first value, the offset of the first
  frame, is ignored so times start at 0), FrameTime (milliseconds per frame), CineRate (frames
  per second). RecommendedDisplayFrameRate is a replay speed, not acquisition timing, and is not
  used. Calibration is the DICOM reader's (``calibration``; areas per mask by its region rule).
* **NIfTI / MetaImage volumes**: the slices along ``axis`` (ITK order, 0 = z; see
  :mod:`ultrasam.io.volumes`) are the frames, oriented exactly as ``load_image(path, slice=k,
  axis=axis)`` orients them. Intensities are scaled to uint8 with *one* window for the whole
  volume (the rules of :func:`ultrasam.io.to_rgb_uint8`, applied volume-wide) so a structure
  keeps its brightness from slice to slice; per-slice scaling would make it flicker. The volume is
  read once; ``positions_mm`` gives each slice's offset along ``axis``.
* **Video files** (MP4, AVI, ... anything OpenCV decodes): decoded once into memory, frame times
  from the container's frame rate.
* **A folder of image frames** (PNG/JPEG/TIFF/BMP/DICOM files), in *natural* name order
  (``f2.png`` before ``f10.png``; zero-padded names sort the same either way). Hidden files and
  files without an image suffix are ignored. All frames must share one size.
* **Multi-page TIFF/GIF**: the pages are the frames.

Memory is bounded: a video or volume larger than ``max_bytes`` (default 2 GiB of decoded
uint8 frames) is refused with a message, instead of exhausting memory.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ultrasam.io.images import to_rgb_uint8
from ultrasam.io.load import load_image, sniff_format

logger = logging.getLogger(__name__)

#: Default cap on decoded frames held in memory (videos, volumes).
MAX_BYTES = 2 << 30

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".webp")
_VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm")
_FRAME_TIME = 0x00181063
_FRAME_TIME_VECTOR = 0x00181065


@dataclass
class FrameSequence:
    """An ordered sequence of 2-D frames read on demand.

    Attributes:
        source: the path as given (or ``"array"``).
        kind: ``"dicom"``, ``"volume"``, ``"video"``, ``"folder"``, ``"pages"`` or ``"array"``.
        n_frames: number of frames.
        size: ``(height, width)`` of every frame.
        times_s: n_frames float64 seconds from the first frame, or ``None`` without timing.
        spacing_mm: ``(row_mm, col_mm)`` of a pixel, or ``None`` when uncalibrated.
        calibration: the DICOM :class:`~ultrasam.io.dicom.Calibration` (per-region areas), or
            ``None`` for other inputs.
        positions_mm: n_frames slice offsets along the stacking axis (volumes), else ``None``.
        warnings: notes about choices made while opening (timing source, refused calibration).
        meta: format details (``axis`` and the volume's affine for volumes, ``fps`` for videos,
            ``files`` for folders).
    """

    source: str
    kind: str
    n_frames: int
    size: tuple[int, int]
    read_frame: Callable[[int], np.ndarray] = field(repr=False)
    times_s: np.ndarray | None = None
    spacing_mm: tuple[float, float] | None = None
    calibration: Any = None
    positions_mm: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.n_frames

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame ``index`` (negative counts from the end) as H x W x 3 uint8 RGB."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"frame index must be an int, got {type(index).__name__}")
        k = int(index) + (self.n_frames if index < 0 else 0)
        if not 0 <= k < self.n_frames:
            raise IndexError(f"frame {index} out of range: the sequence has {self.n_frames} "
                             f"frames (0..{self.n_frames - 1})")
        rgb = self.read_frame(k)
        if rgb.shape[:2] != self.size:
            raise ValueError(f"{self.source}: frame {k} is {rgb.shape[1]}x{rgb.shape[0]} but "
                             f"the sequence is {self.size[1]}x{self.size[0]}; all frames must "
                             "share one size")
        return rgb

    @classmethod
    def from_arrays(cls, frames: Sequence[np.ndarray] | np.ndarray,
                    times_s: Sequence[float] | None = None,
                    spacing_mm: tuple[float, float] | None = None) -> FrameSequence:
        """Frames held in memory: a list of images or an N x H x W [x C] array.

        Each frame is converted by :func:`ultrasam.io.to_rgb_uint8` when read.
        """
        if isinstance(frames, np.ndarray):
            if frames.ndim not in (3, 4):
                raise ValueError(f"frames array must be N x H x W or N x H x W x C, got shape "
                                 f"{frames.shape}")
            items: list[np.ndarray] = list(frames)
        else:
            items = list(frames)
        if not items:
            raise ValueError("no frames given")
        first = to_rgb_uint8(items[0])
        times = _check_times(times_s, len(items))
        return cls(source="array", kind="array", n_frames=len(items), size=first.shape[:2],
                   read_frame=lambda k: to_rgb_uint8(items[k]), times_s=times,
                   spacing_mm=_check_spacing(spacing_mm))


def open_frames(path: str | os.PathLike[str], axis: int = 0, fps: float | None = None,
                spacing_mm: tuple[float, float] | None = None,
                max_bytes: int = MAX_BYTES) -> FrameSequence:
    """Open a cine, volume, video, multi-page image or folder of frames (see module docstring).

    Args:
        path: a file or a folder of frame images.
        axis: volume axis the frames run along (ITK order: 0 = z, 1 = y, 2 = x).
        fps: frames per second to use when the input has no timing (folders, volumes); given
            for an input that has its own timing, it overrides it, with a warning.
        spacing_mm: ``(row_mm, col_mm)`` pixel size to use when the input has no calibration;
            overrides the file's calibration, with a warning, when it has one.
        max_bytes: refuse videos and volumes whose decoded frames would exceed this.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: unreadable input, empty folder, frames of different sizes, too large.
        ImportError: the optional reader the input needs is missing.
    """
    p = Path(os.fspath(path))
    if not p.exists():
        raise FileNotFoundError(f"input not found: {p}")
    if p.is_dir():
        seq = _open_folder(p)
    elif p.suffix.lower() in _VIDEO_SUFFIXES:
        seq = _open_video(p, max_bytes)
    else:
        fmt = sniff_format(p)
        if fmt == "DICOM":
            seq = _open_dicom(p)
        elif fmt in ("NIFTI", "METAIMAGE"):
            seq = _open_volume(p, fmt, axis, max_bytes)
        else:
            seq = _open_pages(p, fmt)
    if axis != 0 and seq.kind != "volume":
        raise ValueError(f"{p}: axis applies to volumes (NIfTI, MetaImage), not to a {seq.kind}")
    _apply_overrides(seq, fps, spacing_mm)
    for w in seq.warnings:
        logger.info("%s: %s", p.name, w)
    return seq


def _apply_overrides(seq: FrameSequence, fps: float | None,
                     spacing_mm: tuple[float, float] | None) -> None:
    if fps is not None:
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0 \
                or not np.isfinite(fps):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        if seq.times_s is not None:
            seq.warnings.append(f"the file's own frame timing was replaced by fps={fps}")
        seq.times_s = np.arange(seq.n_frames, dtype=np.float64) / float(fps)
    if spacing_mm is not None:
        spacing = _check_spacing(spacing_mm)
        if seq.spacing_mm is not None or seq.calibration is not None:
            seq.warnings.append(f"the file's calibration was replaced by spacing_mm={spacing}")
        seq.spacing_mm, seq.calibration = spacing, None


def _check_spacing(spacing: tuple[float, float] | None) -> tuple[float, float] | None:
    if spacing is None:
        return None
    try:
        row, col = (float(v) for v in spacing)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"spacing_mm must be two numbers (row_mm, col_mm), got {spacing!r}") \
            from exc
    if not (row > 0 and col > 0 and np.isfinite(row) and np.isfinite(col)):
        raise ValueError(f"spacing_mm must be positive and finite, got {spacing!r}")
    return row, col


def _check_times(times: Sequence[float] | None, n: int) -> np.ndarray | None:
    if times is None:
        return None
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if t.shape != (n,) or not np.all(np.isfinite(t)) or np.any(np.diff(t) < 0):
        raise ValueError(f"times_s must be {n} finite non-decreasing values")
    return t


# --------------------------------------------------------------------------- DICOM


def dicom_frame_times(ds: Any, n_frames: int) -> tuple[np.ndarray | None, str | None]:
    """Frame times (seconds from the first frame) from a DICOM header, and where they came from.

    See the module docstring for the order of the attributes tried. Returns ``(None, None)``
    when the header carries no usable timing.
    """
    def from_vector() -> np.ndarray | None:
        vec = ds.get("FrameTimeVector")
        if vec is None:
            return None
        v = np.asarray([float(x) for x in (vec if isinstance(vec, Sequence) else [vec])])
        if v.shape != (n_frames,) or not np.all(np.isfinite(v)) or np.any(v[1:] < 0):
            return None
        # v[k] is the increment from frame k-1 to frame k; v[0] the offset of frame 0.
        return np.concatenate([[0.0], np.cumsum(v[1:])]) / 1000.0

    def from_frame_time() -> np.ndarray | None:
        ft = ds.get("FrameTime")
        if ft is None or not float(ft) > 0:
            return None
        return np.arange(n_frames, dtype=np.float64) * float(ft) / 1000.0

    def from_cine_rate() -> np.ndarray | None:
        rate = ds.get("CineRate")
        if rate is None or not float(rate) > 0:
            return None
        return np.arange(n_frames, dtype=np.float64) / float(rate)

    pointers = ds.get("FrameIncrementPointer")
    pointed = [int(t) for t in (pointers if isinstance(pointers, Sequence) else [pointers])
               ] if pointers is not None else []
    tries: list[tuple[str, Callable[[], np.ndarray | None]]] = []
    if _FRAME_TIME_VECTOR in pointed:
        tries.append(("FrameTimeVector", from_vector))
    if _FRAME_TIME in pointed:
        tries.append(("FrameTime", from_frame_time))
    tries += [("FrameTimeVector", from_vector), ("FrameTime", from_frame_time),
              ("CineRate", from_cine_rate)]
    for name, read in tries:
        try:
            times = read()
        except (TypeError, ValueError):
            times = None  # a malformed value: try the next attribute
        if times is not None:
            return times.astype(np.float64), name
    return None, None


def _open_dicom(path: Path) -> FrameSequence:
    from ultrasam.io.dicom import load_dicom

    first = load_dicom(path, frame=0)  # raises a clear ImportError when pydicom is missing
    import pydicom

    n = int(first.meta["n_frames"])
    ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    warnings = list(first.warnings)
    times, source = dicom_frame_times(ds, n) if n > 1 else (np.zeros(1), None)
    if n > 1 and times is None:
        warnings.append("the cine carries no frame timing (FrameTime, FrameTimeVector, "
                        "CineRate); times are not available")
    return FrameSequence(source=str(path), kind="dicom", n_frames=n, size=first.rgb.shape[:2],
                         read_frame=lambda k: load_dicom(path, frame=k).rgb, times_s=times, spacing_mm=first.spacing_mm,
                         calibration=first.meta.get("calibration"), warnings=warnings,
                         meta={"timing": source, "modality": first.meta.get("modality")})


# --------------------------------------------------------------------------- volumes


def _volume_itk(path: Path, fmt: str, max_bytes: int
                ) -> tuple[np.ndarray, tuple[float, float, float], dict[str, Any]]:
    """The whole volume in ITK order (z, y, x[, 3]), voxel spacing (x, y, z) mm, meta."""
    if fmt == "METAIMAGE":
        from ultrasam.io.volumes import read_metaimage

        array, spacing, fields = read_metaimage(path)
        if int(fields["NDims"]) not in (2, 3):
            raise ValueError(f"{path}: MetaImage with NDims={fields['NDims']} is not 2D or 3D")
        if int(fields["NDims"]) == 2:
            array = array[None]
        spacing3 = tuple(float(s) for s in spacing) + (1.0,) * (3 - len(spacing))
        return array, spacing3[:3], {"metaimage_fields": fields}  # type: ignore[return-value]
    from ultrasam.io.volumes import require_nibabel

    nib = require_nibabel()
    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
    except Exception as exc:  # nibabel raises many types
        raise ValueError(f"cannot read NIfTI {path}: {exc}") from exc
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise ValueError(f"{path}: NIfTI of shape {img.shape} is not a 2D image or a 3D volume")
    nbytes = int(np.prod(shape)) * 3
    if nbytes > max_bytes:
        raise ValueError(f"{path}: volume of {shape} voxels is larger than the {max_bytes} "
                         "byte limit; crop it first")
    try:
        data = np.asarray(img.dataobj).reshape(shape + (1,) * (3 - len(shape)))
    except Exception as exc:
        raise ValueError(f"cannot read NIfTI {path}: corrupt or truncated data ({exc})") from exc
    if data.dtype.names and set(data.dtype.names) >= {"R", "G", "B"}:  # RGB NIfTI
        data = np.stack([data["R"], data["G"], data["B"]], axis=-1).transpose(2, 1, 0, 3)
    else:
        data = data.transpose(2, 1, 0)  # nibabel (x, y, z) -> ITK (z, y, x)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return data, zooms + (1.0,) * (3 - len(zooms)), {  # type: ignore[return-value]
        "affine": np.asarray(img.affine, dtype=np.float64), "header": img.header}


def _volume_to_uint8(vol: np.ndarray) -> np.ndarray:
    """One intensity window for the whole volume, by :func:`to_rgb_uint8`'s dtype rules."""
    if vol.dtype == np.uint8:
        return vol
    if vol.dtype == bool:
        return vol.astype(np.uint8) * np.uint8(255)
    if vol.dtype.kind not in "iuf":
        raise ValueError(f"volume has an unsupported dtype {vol.dtype}")
    if vol.dtype.kind == "f" and not np.all(np.isfinite(vol)):
        raise ValueError("volume contains non-finite values (NaN or inf); replace them first")
    lo, hi = float(vol.min()), float(vol.max())
    if vol.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return np.rint(vol * 255.0).astype(np.uint8)
    if hi == lo:
        return np.zeros(vol.shape, np.uint8)
    return np.rint((vol.astype(np.float32) - lo) * (255.0 / (hi - lo))).clip(0, 255) \
        .astype(np.uint8)


def _open_volume(path: Path, fmt: str, axis: int, max_bytes: int) -> FrameSequence:
    from ultrasam.io.volumes import load_volume_slice

    if isinstance(axis, bool) or axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 (ITK order z, y, x), got {axis!r}")
    # One slice through the shared reader: its spacing rules and warnings (units, placeholders).
    probe = load_volume_slice(path, slice=0, axis=axis, fmt=fmt)
    vol, spacing_xyz, meta = _volume_itk(path, fmt, max_bytes)
    if vol.size * (3 if vol.ndim == 3 else 1) > max_bytes:
        raise ValueError(f"{path}: volume of shape {vol.shape} is larger than the {max_bytes} "
                         "byte limit; crop it first")
    vol8 = _volume_to_uint8(vol)
    n = vol8.shape[axis]
    step = spacing_xyz[2 - axis]  # ITK axis 0 (z) has the x, y, z spacing's third value

    def read(k: int) -> np.ndarray:
        return to_rgb_uint8(np.take(vol8, k, axis=axis))

    size = read(0).shape[:2]
    meta.update({"axis": axis, "format": fmt, "volume_shape_itk": tuple(vol8.shape[:3])})
    return FrameSequence(source=str(path), kind="volume", n_frames=n, size=size,
                         read_frame=read, spacing_mm=probe.spacing_mm,
                         positions_mm=np.arange(n, dtype=np.float64) * step,
                         warnings=list(probe.warnings),
                         meta=meta)


# --------------------------------------------------------------------------- videos


def _open_video(path: Path, max_bytes: int) -> FrameSequence:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}: OpenCV has no decoder for it, or the file "
                         "is corrupt")
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        frames: list[np.ndarray] = []
        total = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            total += bgr.nbytes
            if total > max_bytes:
                raise ValueError(f"{path}: decoded video exceeds the {max_bytes} byte limit "
                                 f"after {len(frames)} frames; cut it first")
            frames.append(to_rgb_uint8(bgr, color_space="BGR"))
    finally:
        cap.release()
    if not frames:
        raise ValueError(f"{path}: the video holds no decodable frame")
    warnings = []
    times = None
    if fps > 0 and np.isfinite(fps):
        times = np.arange(len(frames), dtype=np.float64) / fps
    else:
        warnings.append("the video declares no frame rate; times are not available")
    return FrameSequence(source=str(path), kind="video", n_frames=len(frames),
                         size=frames[0].shape[:2], read_frame=lambda k: frames[k],
                         times_s=times, warnings=warnings, meta={"fps": fps or None})


# --------------------------------------------------------------------------- folders, pages


def natural_key(name: str) -> list[Any]:
    """Sort key that orders digit runs by value: ``f2`` < ``f10``; ties by the plain name."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)] + [name]


def _open_folder(folder: Path) -> FrameSequence:
    files = sorted((f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                    and f.suffix.lower() in IMAGE_SUFFIXES), key=lambda f: natural_key(f.name))
    if not files:
        raise ValueError(f"{folder}: no image frames found (expected files ending in "
                         f"{', '.join(IMAGE_SUFFIXES)})")
    first = load_image(files[0])

    def read(k: int) -> np.ndarray:
        return first.rgb if k == 0 else load_image(files[k]).rgb

    return FrameSequence(source=str(folder), kind="folder", n_frames=len(files),
                         size=first.rgb.shape[:2], read_frame=read,
                         spacing_mm=first.spacing_mm, calibration=first.meta.get("calibration"),
                         warnings=list(first.warnings),
                         meta={"files": [f.name for f in files]})


def _open_pages(path: Path, fmt: str) -> FrameSequence:
    first = load_image(path, frame=0)
    n = int(first.meta.get("n_frames", 1))
    return FrameSequence(source=str(path), kind="pages", n_frames=n, size=first.rgb.shape[:2],
                         read_frame=lambda k: load_image(path, frame=k).rgb,
                         warnings=list(first.warnings), meta={"format": fmt})
