"""Readers for volumes, stacks and videos, and slicing along the first array axis.

Array order: every reader here returns arrays in *slowest axis first* order, the order of
SimpleITK and of MetaImage's raw data: a 3D volume is ``Z x Y x X`` (slices, rows, columns), a
2D+t sequence ``T x Y x X``, a video ``T x H x W x 3``. nibabel returns NIfTI data the other
way round (``X x Y x Z[ x T]``, the voxel index order ``i, j, k``); :func:`read_nifti` reverses
the axes so that UltraSam's rule "slice along the first array axis" means the same thing for
NIfTI and MetaImage inputs (frame ``t`` of a CAMUS sequence is ``volume[t]``, rows = ``y``).

MetaImage (``.mha`` with the data inline, ``.mhd`` + a raw file) is read by the small numpy reader
of :mod:`ultrasam.io.volumes` (uncompressed and zlib-compressed data), so SimpleITK (a 276 MB
wheel) stays optional; :func:`parse_metaimage_header` is re-exported from there.

Optional dependencies (nibabel, OpenCV for video) are imported inside the functions using them.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ultrasam.io.volumes import parse_metaimage_header, require_nibabel
from ultrasam.io.volumes import read_metaimage as _read_metaimage_xyz

__all__ = [
    "Volume", "read_nifti", "read_metaimage", "parse_metaimage_header", "read_npy",
    "read_pickled_npy", "read_video", "count_video_frames", "iter_slices", "volume_to_uint8",
]


@dataclass(frozen=True)
class Volume:
    """An N-D array in slowest-axis-first order and its voxel spacing in the same order.

    ``array``: e.g. ``Z x Y x X`` (or ``Z x Y x X x C`` for multi-channel MetaImage).
    ``spacing``: one value per spatial axis, same order as ``array`` (mm for medical formats).
    """

    array: np.ndarray
    spacing: tuple[float, ...]


def _load_bytes(source: str | Path | bytes) -> bytes:
    return bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()


# -- NIfTI ----------------------------------------------------------------------------------------
def read_nifti(source: str | Path | bytes) -> Volume:
    """Read a ``.nii`` / ``.nii.gz`` (path or bytes) as a slowest-axis-first :class:`Volume`.

    The array is nibabel's data with its axes reversed (``X x Y x Z`` -> ``Z x Y x X``), in its
    stored dtype (scaling slopes applied only when the header defines them). Raises ValueError
    for data that is not NIfTI.
    """
    nib = require_nibabel()  # optional dependency (extra "volumes" / "data")
    raw = _load_bytes(source)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"corrupt gzip stream in NIfTI file: {e}") from e
    try:
        img: Any = (nib.Nifti2Image if _is_nifti2(raw) else nib.Nifti1Image).from_bytes(raw)
        # The array proxy applies scl_slope/scl_inter only when the header sets them, so label
        # volumes keep their integer dtype.
        data = np.asarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms())
    except Exception as e:  # nibabel raises many types (HeaderDataError, ValueError, ...)
        raise ValueError(f"not a readable NIfTI file: {e}") from e
    order = tuple(reversed(range(data.ndim)))
    spacing = tuple(reversed(zooms[: data.ndim]))
    return Volume(np.ascontiguousarray(np.transpose(data, order)), spacing)


def _is_nifti2(raw: bytes) -> bool:
    """NIfTI-2 headers start with sizeof_hdr = 540 (NIfTI-1: 348), in either byte order."""
    return len(raw) >= 4 and 540 in (int.from_bytes(raw[:4], "little"),
                                     int.from_bytes(raw[:4], "big"))


# -- MetaImage ------------------------------------------------------------------------------------
def read_metaimage(source: str | Path | bytes,
                   data_file: Callable[[str], bytes] | None = None) -> Volume:
    """Read a MetaImage (``.mha`` or ``.mhd``, path or bytes) as a slowest-axis-first
    :class:`Volume`.

    A view of :func:`ultrasam.io.volumes.read_metaimage` (the project's one MetaImage reader):
    ``DimSize = X Y Z`` gives an array ``Z x Y x X`` (``x C`` appended when
    ``ElementNumberOfChannels`` > 1), spacing reversed to the same order. Handles inline and
    external data (``data_file(name)`` returns its bytes; by default read next to ``source``
    when it is a path), zlib compression, both byte orders and every scalar ``MET_*`` type.
    Raises ValueError for malformed or truncated files.
    """
    array, spacing_xyz, _fields = _read_metaimage_xyz(source, data_file)
    return Volume(array, tuple(reversed(spacing_xyz)))


# -- numpy ----------------------------------------------------------------------------------------
def read_npy(source: str | Path | bytes) -> np.ndarray:
    """A plain ``.npy`` array (pickles refused). Raises ValueError when unreadable."""
    try:
        return np.load(io.BytesIO(_load_bytes(source)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"not a readable .npy array: {e}") from e


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists/tuples of numpy arrays and scalars, nothing else.

    ``np.save`` of a Python object (e.g. a dict of masks) writes a pickle; loading it with
    ``allow_pickle=True`` would run arbitrary code from a downloaded file, so only the classes
    numpy needs to rebuild arrays are allowed.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"), ("builtins", "slice"), ("collections",
                                                                         "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def read_pickled_npy(source: str | Path | bytes) -> Any:
    """The Python object (e.g. a dict of arrays) that ``np.save`` pickled into a ``.npy`` file.

    Object arrays are read with a restricted unpickler (numpy arrays, scalars and builtin
    containers only). A 0-d object array is unwrapped to its item, as ``np.load(...).item()``.
    Plain numeric ``.npy`` files are returned as arrays. Raises ValueError when unreadable.
    """
    buf = io.BytesIO(_load_bytes(source))
    try:
        version = np.lib.format.read_magic(buf)
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        _shape, _fortran, dtype = reader(buf)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"not a readable .npy file: {e}") from e
    if not dtype.hasobject:
        buf.seek(0)
        return read_npy(buf.getvalue())
    try:
        obj = _NumpyOnlyUnpickler(buf).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as e:
        raise ValueError(f"cannot unpickle .npy content: {e}") from e
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        return obj.item()
    return obj


# -- video ----------------------------------------------------------------------------------------
def read_video(path: str | Path,
               frames: set[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Decode a video file (AVI, MP4, ...) with OpenCV; yields ``(index, T-th frame)``.

    Frames are ``H x W x 3`` uint8 RGB, ``index`` 0-based in decoding order. ``frames``: only
    these indices are yielded (decoding stops after the largest). Raises ValueError when OpenCV
    cannot open the file or it holds no frame.
    """
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"OpenCV cannot open video {Path(path).name}")
    last = max(frames) if frames else None
    index = 0
    try:
        while last is None or index <= last:
            ok, bgr = cap.read()
            if not ok:
                break
            if frames is None or index in frames:
                yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise ValueError(f"video {Path(path).name} holds no decodable frame")


def count_video_frames(path: str | Path) -> int:
    """Number of decodable frames (decodes the whole video: container counts can lie)."""
    return sum(1 for _ in read_video(path))


# -- slicing --------------------------------------------------------------------------------------
def iter_slices(array: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, array[index])`` along the first axis (slices of a volume, frames of a video)."""
    if array.ndim < 3:
        raise ValueError(f"expected a volume/sequence with >= 3 axes, got shape {array.shape}")
    for i in range(array.shape[0]):
        yield i, array[i]


def volume_to_uint8(array: np.ndarray) -> np.ndarray:
    """A whole volume as uint8 with *one* intensity mapping for all its slices.

    uint8 is unchanged; integer data within 0..255 is cast; floats within [0, 1] are scaled by
    255; anything else is rescaled linearly from the volume's [min, max] (per volume, not per
    slice, so that frames of one sweep keep comparable brightness).
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    a = np.nan_to_num(array.astype(np.float64))
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if np.issubdtype(array.dtype, np.integer) and lo >= 0 and hi <= 255:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating) and lo >= 0 and hi <= 1.0:
        return np.round(a * 255.0).astype(np.uint8)
    if hi <= lo:
        return np.zeros(array.shape, np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)
