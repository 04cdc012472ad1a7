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

The MetaImage reader (:func:`read_metaimage`: ``.mha`` with the data after the header, ``.mhd`` +
raw file, optionally zlib-compressed; a path or bytes) is our own, so SimpleITK is not needed; it
is the project's one MetaImage reader (``ultrasam.data.sources`` wraps it). nibabel is imported
only when a NIfTI is read, through :func:`require_nibabel`.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ultrasam.io.images import LoadedImage, to_rgb_uint8

from ..errors import MissingDependencyError

logger = logging.getLogger(__name__)

# MetaImage element types -> numpy type codes (byte order set from the header).
_MET_TYPES: dict[str, str] = {
    "MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2",
    "MET_INT": "i4", "MET_UINT": "u4", "MET_LONG": "i4", "MET_ULONG": "u4",
    "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
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


def require_nibabel() -> Any:
    """The nibabel module, imported on first use (optional dependency, extra ``volumes``).

    Raises ImportError naming the extra to install when nibabel is missing.
    """
    try:
        import nibabel
    except ImportError as exc:
        raise MissingDependencyError("reading NIfTI needs nibabel: pip install ultrasam[volumes]") from exc
    return nibabel


def read_nifti_slice(
    path: str | Path, slice: int | None = None, axis: int = 0
) -> tuple[np.ndarray, tuple[float, float] | None, list[str], dict[str, Any]]:
    """One 2D slice of a NIfTI file.

    Returns:
        ``(array, spacing_mm, warnings, meta)``: array is rows x cols (or rows x cols x 3 for
        RGB NIfTI) in the file's dtype, oriented as described in the module docstring.
    """
    nib = require_nibabel()
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

# Real headers are well under 1 KiB; the limits stop a binary file being scanned as text.
_MAX_HEADER_BYTES = 1 << 16
_MAX_HEADER_FIELDS = 200


def _prefix(name: str) -> str:
    return f"{name}: " if name else ""


def parse_metaimage_header(raw: bytes, name: str = "") -> tuple[dict[str, str], int]:
    """Parse the text header of a MetaImage; returns (fields, offset of the data in ``raw``).

    The header is ``Key = Value`` lines ending with the ``ElementDataFile`` line (the last line
    of a ``.mhd`` may lack its newline). ``name`` (the file, when known) starts every error
    message. Raises ValueError for a malformed header or one over 64 KiB / 200 fields.
    """
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\n", pos, _MAX_HEADER_BYTES)
        if (end < 0 and len(raw) > _MAX_HEADER_BYTES) or len(fields) >= _MAX_HEADER_FIELDS:
            raise ValueError(f"{_prefix(name)}MetaImage header longer than 64 KiB or "
                             f"{_MAX_HEADER_FIELDS} fields: not a MetaImage file")
        end = len(raw) if end < 0 else end
        line = raw[pos:end].decode("latin-1").strip()
        pos = end + 1
        if not line:
            continue
        if "=" not in line:
            raise ValueError(f"{_prefix(name)}malformed MetaImage header line {line[:60]!r}")
        key, value = (s.strip() for s in line.split("=", 1))
        fields[key] = value
        if key == "ElementDataFile":
            return fields, pos
    raise ValueError(f"{_prefix(name)}MetaImage header has no ElementDataFile line")


def _metaimage_layout(fields: dict[str, str], prefix: str) -> tuple[tuple[int, ...], np.dtype]:
    """(array shape in ITK order, dtype in the file's byte order) from a parsed header."""
    missing = [k for k in ("NDims", "DimSize", "ElementType") if k not in fields]
    if missing:
        raise ValueError(f"{prefix}MetaImage header lacks {', '.join(missing)}")
    etype = fields["ElementType"]
    if etype not in _MET_TYPES:
        raise ValueError(f"{prefix}unsupported MetaImage ElementType {etype!r}; "
                         f"supported: {', '.join(sorted(_MET_TYPES))}")
    try:
        ndims = int(fields["NDims"])
        dims = [int(v) for v in fields["DimSize"].split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except ValueError as exc:
        raise ValueError(f"{prefix}malformed MetaImage header ({exc})") from exc
    if ndims < 1 or len(dims) != ndims or min(dims) < 1 or channels < 1:
        raise ValueError(f"{prefix}malformed MetaImage header: NDims={ndims}, DimSize={dims}, "
                         f"ElementNumberOfChannels={channels}")
    msb = fields.get("BinaryDataByteOrderMSB", fields.get("ElementByteOrderMSB", "False"))
    dtype = np.dtype(_MET_TYPES[etype]).newbyteorder(">" if msb.lower() == "true" else "<")
    return tuple(dims[::-1]) + ((channels,) if channels > 1 else ()), dtype


def _sibling_reader(header: Path) -> Callable[[str], bytes]:
    """Reads a MetaImage's external data file, named relative to the header's folder."""
    def read(name: str) -> bytes:
        data_path = header.parent / name
        if not data_path.is_file():
            raise FileNotFoundError(f"{header}: MetaImage data file not found: {data_path}")
        return data_path.read_bytes()
    return read


def _metaimage_payload(inline: bytes, fields: dict[str, str], n_bytes: int, prefix: str,
                       data_file: Callable[[str], bytes] | None) -> bytes:
    """The decompressed voxel bytes: inline after the header, or from the external data file."""
    name = fields["ElementDataFile"]
    if name.upper() == "LOCAL":
        payload = inline
    elif name.upper().startswith("LIST") or "%" in name:
        raise ValueError(f"{prefix}MetaImage with multiple data files ({name!r}) is not "
                         f"supported")
    elif data_file is None:
        raise ValueError(f"{prefix}MetaImage data is in {name!r}; pass data_file to read it")
    else:
        payload = data_file(name)
        try:
            header_size = int(fields.get("HeaderSize", "0"))
        except ValueError as exc:
            raise ValueError(f"{prefix}malformed MetaImage HeaderSize ({exc})") from exc
        if header_size == -1:  # MetaIO: the data are the last n_bytes of the file
            payload = payload[max(0, len(payload) - n_bytes):]
        elif header_size > 0:
            payload = payload[header_size:]
    if fields.get("CompressedData", "False").lower() == "true":
        try:
            payload = zlib.decompress(payload)
        except zlib.error as exc:
            raise ValueError(f"{prefix}corrupt compressed MetaImage data ({exc})") from exc
    return payload


def read_metaimage(
    source: str | Path | bytes, data_file: Callable[[str], bytes] | None = None
) -> tuple[np.ndarray, tuple[float, ...], dict[str, str]]:
    """Read a MetaImage (``.mha`` with inline data, ``.mhd`` + a data file), path or bytes.

    Handles inline (``LOCAL``) and external data (``HeaderSize`` included), zlib compression
    (``CompressedData = True``), both byte orders and every scalar ``MET_*`` type, in any
    number of dimensions. ``data_file(name)`` returns the bytes of an external data file; by
    default it is read next to ``source`` when ``source`` is a path (FileNotFoundError when
    absent). Raises ValueError, naming the file, for malformed or truncated data.

    Returns:
        ``(array, spacing_xyz, fields)``: array in ITK order -- ``DimSize = X Y Z`` gives
        ``Z x Y x X`` (``Y x X`` for 2D), with a trailing channel axis when
        ElementNumberOfChannels > 1 -- in native byte order (a writable copy);
        ElementSpacing (or ElementSize; 1 per axis when absent) in file order (x, y[, z]);
        and the header fields.
    """
    if isinstance(source, (bytes, bytearray)):
        name, raw = "", bytes(source)
    else:
        name, raw = str(source), Path(source).read_bytes()
        data_file = data_file or _sibling_reader(Path(source))
    prefix = _prefix(name)
    fields, offset = parse_metaimage_header(raw, name)
    shape, dtype = _metaimage_layout(fields, prefix)
    count = int(np.prod(shape))
    payload = _metaimage_payload(raw[offset:], fields, count * dtype.itemsize, prefix, data_file)
    if len(payload) < count * dtype.itemsize:
        raise ValueError(f"{prefix}truncated MetaImage data: expected {count * dtype.itemsize} "
                         f"bytes for DimSize {fields['DimSize']} {fields['ElementType']}, found "
                         f"{len(payload)}")
    array = np.frombuffer(payload, dtype=dtype, count=count).reshape(shape)
    spacing_text = fields.get("ElementSpacing", fields.get("ElementSize"))
    try:
        spacing = (tuple(float(v) for v in spacing_text.split()) if spacing_text
                   else (1.0,) * len(fields["DimSize"].split()))
    except ValueError as exc:
        raise ValueError(f"{prefix}malformed MetaImage ElementSpacing ({exc})") from exc
    return array.astype(dtype.newbyteorder("="), copy=True), spacing, fields


def read_metaimage_slice(
    path: str | Path, slice: int | None = None, axis: int = 0
) -> tuple[np.ndarray, tuple[float, float] | None, list[str], dict[str, Any]]:
    """One 2D slice of a MetaImage (same return value as :func:`read_nifti_slice`)."""
    path = str(path)
    array, spacing, fields = read_metaimage(path)
    ndims = int(fields["NDims"])  # validated by read_metaimage
    if ndims not in (2, 3):
        raise ValueError(f"{path}: MetaImage with NDims={ndims}, DimSize={fields['DimSize']} "
                         f"is not 2D or 3D")
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
