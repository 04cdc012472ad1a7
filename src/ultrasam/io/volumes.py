"""2D slices of NIfTI and MetaImage volumes, with their in-plane spacing.

Array order. nibabel returns NIfTI voxels as ``(x, y, z)`` = (i, j, k); SimpleITK (and the raw
layout of a MetaImage file, x fastest) gives ``(z, y, x)``. This module speaks **ITK order** for
both formats, so a slice is identical to ``SimpleITK.GetArrayFromImage(img)[k]`` whichever file
it came from, and image rows run along y and columns along x as medical viewers show them:

* ``axis=0`` (the default) indexes z: the slice is ``(y, x)`` -- rows y, columns x; the frame
  index of a stack of 2D images;
* ``axis=1`` indexes y: the slice is ``(z, x)``;
* ``axis=2`` indexes x: the slice is ``(z, y)``.

So a NIfTI slice is nibabel's ``data[:, :, k].T`` for ``axis=0`` (transposed: nibabel puts x
first). ``slice=None`` takes the middle slice and says so in a warning.

Spacing. ``spacing_mm`` is ``(row_mm, col_mm)`` of the slice, from the voxel sizes along its two
axes. NIfTI: ``header.get_zooms()`` converted by the header's spatial unit (metre, mm, micron);
a header with unit "unknown" gives ``None`` and a warning (nibabel writes "unknown" unless told,
so a 1.0 there is usually a placeholder). MetaImage: ``ElementSpacing``, in mm by ITK convention;
a spacing of exactly 1 is reported but flagged as a possible placeholder.

The MetaImage reader is our own (``.mha`` with the data after the header, ``.mhd`` + raw file,
optionally zlib-compressed); SimpleITK is not needed.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ultrasam.io.images import LoadedImage, to_rgb_uint8

logger = logging.getLogger(__name__)

_MET_TYPES = {
    "MET_UCHAR": np.uint8, "MET_CHAR": np.int8, "MET_USHORT": np.uint16, "MET_SHORT": np.int16,
    "MET_UINT": np.uint32, "MET_INT": np.int32, "MET_ULONG": np.uint32, "MET_LONG": np.int32,
    "MET_ULONG_LONG": np.uint64, "MET_LONG_LONG": np.int64, "MET_FLOAT": np.float32,
    "MET_DOUBLE": np.float64,
}
_NIFTI_UNIT_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 0.001}


def _pick_slice(path: str, shape_zyx: tuple[int, ...], slice: int | None, axis: int,
                warnings: list[str]) -> int:
    """Validate ``axis``/``slice`` for a volume of ITK-order shape (z, y, x); return the index."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 (ITK order z, y, x), got {axis!r}")
    n = shape_zyx[axis]
    if slice is None:
        index = n // 2
        if n > 1:
            warnings.append(f"volume has {n} slices along axis {axis}; using the middle slice "
                            f"{index} (pass slice=K with 0 <= K <= {n - 1})")
        return index
    if isinstance(slice, bool) or not isinstance(slice, (int, np.integer)):
        raise TypeError(f"slice must be an int, got {type(slice).__name__}")
    if not 0 <= int(slice) < n:
        raise ValueError(f"{path}: slice {slice} is out of range along axis {axis}; valid "
                         f"slices are 0..{n - 1}")
    return int(slice)


def _in_plane(spacing_xyz: tuple[float, float, float], axis: int) -> tuple[float, float]:
    """(row_mm, col_mm) of a slice taken along ITK-order ``axis`` (see module docstring)."""
    sx, sy, sz = spacing_xyz
    return {0: (sy, sx), 1: (sz, sx), 2: (sz, sy)}[axis]


# --------------------------------------------------------------------------- NIfTI


def read_nifti_slice(
    path: str | Path, slice: int | None = None, axis: int = 0
) -> tuple[np.ndarray, tuple[float, float] | None, list[str], dict[str, Any]]:
    """One 2D slice of a NIfTI file.

    Returns:
        ``(array, spacing_mm, warnings, meta)``: array is rows x cols (or rows x cols x 3 for
        RGB NIfTI) in the file's dtype, oriented as described in the module docstring.
    """
    try:
        import nibabel as nib
    except ImportError as exc:
        raise ImportError("reading NIfTI needs nibabel: pip install ultrasam[volumes]") from exc
    path = str(path)
    try:
        img = nib.load(path)
        proxy = img.dataobj
        shape = tuple(int(s) for s in img.shape)
    except Exception as exc:  # nibabel raises many types (HeaderDataError, EOFError, ...)
        raise ValueError(f"cannot read NIfTI {path}: {exc}") from exc
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise ValueError(f"{path}: NIfTI of shape {img.shape} is not a 2D image or a 3D volume")
    shape3 = shape + (1,) * (3 - len(shape))  # nibabel order (x, y, z)
    warnings: list[str] = []
    index = _pick_slice(path, shape3[::-1], slice, axis, warnings)
    nib_axis = 2 - axis
    key: list[Any] = [np.s_[:]] * 3
    key[nib_axis] = index
    extra = (0,) * (len(img.shape) - len(shape))  # trailing singleton dims beyond 3
    try:
        if len(shape) == 2:  # small 2D image: read it whole, add z
            data = np.asarray(proxy).reshape(shape3)[tuple(key)]
        else:  # slicing the proxy reads only this slice from an uncompressed file
            data = proxy[tuple(key) + extra]
    except Exception as exc:
        raise ValueError(f"cannot read NIfTI {path}: corrupt or truncated data ({exc})") from exc
    data = np.asarray(data)
    if data.dtype.names and set(data.dtype.names) >= {"R", "G", "B"}:  # RGB24 / RGBA32 NIfTI
        data = np.stack([data["R"], data["G"], data["B"]], axis=-1)
        array = np.ascontiguousarray(np.swapaxes(data, 0, 1))
    else:
        array = np.ascontiguousarray(data.T)
    hdr = img.header
    zooms = tuple(float(z) for z in hdr.get_zooms()[:3]) + (1.0,) * (3 - len(hdr.get_zooms()[:3]))
    unit = hdr.get_xyzt_units()[0]
    spacing: tuple[float, float] | None
    if unit in _NIFTI_UNIT_TO_MM:
        factor = _NIFTI_UNIT_TO_MM[unit]
        row, col = _in_plane(zooms, axis)  # type: ignore[arg-type]
        spacing = (row * factor, col * factor) if row > 0 and col > 0 else None
    else:
        spacing = None
        warnings.append("NIfTI header declares no spatial unit; physical spacing not used")
    meta = {"format": "NIFTI", "slice": index, "axis": axis, "volume_shape_xyz": shape3,
            "zooms_xyz": zooms, "unit": unit}
    return array, spacing, warnings, meta


# --------------------------------------------------------------------------- MetaImage


def _parse_metaimage_header(raw: bytes, path: str) -> tuple[dict[str, str], int]:
    """Parse 'Key = Value' lines up to and including ElementDataFile; returns (fields, offset)."""
    fields: dict[str, str] = {}
    offset = 0
    while offset < len(raw):
        end = raw.find(b"\n", offset)
        if end < 0:
            end = len(raw)
        line = raw[offset:end].decode("latin-1").strip()
        offset = end + 1
        if not line:
            continue
        if "=" not in line:
            raise ValueError(f"{path}: malformed MetaImage header line {line[:60]!r}")
        key, value = (s.strip() for s in line.split("=", 1))
        fields[key] = value
        if key == "ElementDataFile":
            return fields, offset
        if len(fields) > 200:
            break
    raise ValueError(f"{path}: MetaImage header has no ElementDataFile line")


def read_metaimage(path: str | Path) -> tuple[np.ndarray, tuple[float, ...], dict[str, str]]:
    """Read a MetaImage file.

    Returns:
        ``(array, spacing_xyz, fields)``: array in ITK order -- (y, x) for 2D, (z, y, x) for 3D,
        with a trailing channel axis when ElementNumberOfChannels > 1 -- and ElementSpacing in
        file order (x, y[, z]).
    """
    path = str(path)
    with open(path, "rb") as f:
        raw = f.read(1 << 16)
    fields, header_len = _parse_metaimage_header(raw, path)
    missing = [k for k in ("NDims", "DimSize", "ElementType") if k not in fields]
    if missing:
        raise ValueError(f"{path}: MetaImage header lacks {', '.join(missing)}")
    if fields["ElementType"] not in _MET_TYPES:
        raise ValueError(f"{path}: unsupported MetaImage ElementType {fields['ElementType']!r}; "
                         f"supported: {', '.join(sorted(_MET_TYPES))}")
    dtype = np.dtype(_MET_TYPES[fields["ElementType"]])
    try:
        ndims = int(fields["NDims"])
        dims = [int(v) for v in fields["DimSize"].split()]
    except ValueError as exc:
        raise ValueError(f"{path}: malformed MetaImage header ({exc})") from exc
    if ndims not in (2, 3) or len(dims) != ndims or min(dims) < 1:
        raise ValueError(f"{path}: MetaImage with NDims={ndims}, DimSize={dims} is not 2D or 3D")
    channels = int(fields.get("ElementNumberOfChannels", "1"))
    if fields.get("BinaryDataByteOrderMSB", fields.get("ElementByteOrderMSB", "False")) == "True":
        dtype = dtype.newbyteorder(">")
    shape = tuple(dims[::-1]) + ((channels,) if channels > 1 else ())
    n_bytes = int(np.prod(shape)) * dtype.itemsize
    data_file = fields["ElementDataFile"]
    if data_file == "LOCAL":
        with open(path, "rb") as f:
            f.seek(header_len)
            payload = f.read()
    elif data_file.upper() == "LIST" or "%" in data_file:
        raise ValueError(f"{path}: MetaImage with ElementDataFile={data_file} is not supported")
    else:
        data_path = Path(path).parent / data_file
        if not data_path.is_file():
            raise FileNotFoundError(f"{path}: MetaImage data file not found: {data_path}")
        payload = data_path.read_bytes()
        header_size = int(fields.get("HeaderSize", "0"))
        if header_size == -1:
            payload = payload[len(payload) - n_bytes:]
        elif header_size > 0:
            payload = payload[header_size:]
    if fields.get("CompressedData", "False") == "True":
        try:
            payload = zlib.decompress(payload)
        except zlib.error as exc:
            raise ValueError(f"{path}: corrupt compressed MetaImage data ({exc})") from exc
    if len(payload) < n_bytes:
        raise ValueError(f"{path}: truncated MetaImage data: expected {n_bytes} bytes for "
                         f"DimSize {dims} {fields['ElementType']}, found {len(payload)}")
    array = np.frombuffer(payload, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
    spacing = tuple(float(v) for v in fields.get("ElementSpacing",
                                                 " ".join(["1"] * ndims)).split())
    return array, spacing, fields


def read_metaimage_slice(
    path: str | Path, slice: int | None = None, axis: int = 0
) -> tuple[np.ndarray, tuple[float, float] | None, list[str], dict[str, Any]]:
    """One 2D slice of a MetaImage (same return value as :func:`read_nifti_slice`)."""
    path = str(path)
    array, spacing, fields = read_metaimage(path)
    ndims = int(fields["NDims"])
    channels = int(fields.get("ElementNumberOfChannels", "1"))
    warnings: list[str] = []
    vol = array if ndims == 3 else array[None]
    spacing3 = tuple(spacing) + (1.0,) * (3 - len(spacing))
    index = _pick_slice(path, vol.shape[:3], slice, axis, warnings)
    plane = np.take(vol, index, axis=axis)
    row, col = _in_plane(spacing3, axis)  # type: ignore[arg-type]
    if row == 1.0 and col == 1.0:
        warnings.append("MetaImage ElementSpacing is 1 x 1: possibly a placeholder, not mm")
    meta = {"format": "METAIMAGE", "slice": index, "axis": axis,
            "volume_shape_zyx": tuple(vol.shape[:3]), "channels": channels,
            "spacing_xyz": spacing3}
    return np.ascontiguousarray(plane), (row, col), warnings, meta


def load_volume_slice(path: str | Path, slice: int | None = None, axis: int = 0,
                      fmt: str = "NIFTI") -> LoadedImage:
    """Load one slice of a NIfTI (``fmt="NIFTI"``) or MetaImage volume as a LoadedImage."""
    reader = read_nifti_slice if fmt == "NIFTI" else read_metaimage_slice
    array, spacing, warnings, meta = reader(path, slice=slice, axis=axis)
    meta["shape"] = tuple(array.shape)
    return LoadedImage(rgb=to_rgb_uint8(array), spacing_mm=spacing, warnings=warnings,
                       source=str(path), meta=meta)
