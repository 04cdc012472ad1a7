"""Check an uploaded file from its content and headers before any pixel is decoded.

The format comes from the file's first bytes (:func:`ultrasam.io.load.sniff_format`), never
from the client's file name. Sizes come from headers (Pillow's lazy open, the DICOM header, the
NIfTI header, the MetaImage header) and are checked against the limits first, so a
decompression bomb is refused without being decompressed. Two constructs that would let a file
reach beyond itself or inflate without bound are refused outright: MetaImage headers naming an
external data file (a path chosen by the client) and deflated DICOM datasets.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from ultrasam.io.load import sniff_format

from .settings import ServeSettings

PILLOW_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP")
#: Suffix a stored upload gets, by sniffed format (the readers dispatch on content, but
#: nibabel needs a NIfTI suffix).
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp", "GIF": ".gif",
            "WEBP": ".webp", "DICOM": ".dcm", "NIFTI": ".nii", "METAIMAGE": ".mha"}
_DEFLATED_DICOM = "1.2.840.10008.1.2.1.99"
_MAX_BYTES_PER_ELEMENT = 8  # the widest MetaImage element type (MET_DOUBLE, MET_LONG_LONG)


class UploadRejected(ValueError):
    """An upload the server will not read; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AxisGeometry:
    """Frames (or slices) along one axis, and the size of each: ``height`` x ``width`` px."""

    frames: int
    height: int
    width: int


@dataclass(frozen=True)
class Probe:
    """What an upload holds. ``axes`` has one entry for 2-D files (frames of a cine, pages of
    a TIFF/GIF) and three for volumes (ITK order z, y, x; see :mod:`ultrasam.io.volumes`)."""

    format: str
    kind: str  # "image", "cine" or "volume"
    axes: tuple[AxisGeometry, ...]


def detect_format(path: Path) -> tuple[str, str]:
    """The format sniffed from the file's first bytes, and the suffix to store it under.

    Raises:
        UploadRejected: 415 for an empty, unrecognised or unsupported file.
    """
    try:
        fmt = sniff_format(path)
    except ValueError as exc:
        raise UploadRejected(415, _strip_path(str(exc), path)) from exc
    suffix = SUFFIXES[fmt]
    if fmt == "NIFTI":
        with open(path, "rb") as f:
            if f.read(2) == b"\x1f\x8b":
                suffix = ".nii.gz"
    return fmt, suffix


def probe_upload(path: Path, fmt: str, settings: ServeSettings) -> Probe:
    """Validate the file at ``path`` (server-chosen, stored with the suffix of
    :func:`detect_format`) against ``settings``' limits.

    Raises:
        UploadRejected: 415 for an unsupported type, 413 for a frame, frame count or volume
            over the limits, 422 for a malformed header.
    """
    if fmt in PILLOW_FORMATS:
        axes = (_pillow_geometry(path, fmt, settings),)
        kind = "cine" if axes[0].frames > 1 else "image"
    elif fmt == "DICOM":
        axes = (_dicom_geometry(path, settings),)
        kind = "cine" if axes[0].frames > 1 else "image"
    elif fmt == "NIFTI":
        axes = _volume_axes(_nifti_shape_zyx(path, settings), settings)
        kind = "volume" if axes[0].frames > 1 else "image"
    elif fmt == "METAIMAGE":
        axes = _volume_axes(_metaimage_shape_zyx(path, settings), settings)
        kind = "volume" if axes[0].frames > 1 else "image"
    else:
        raise UploadRejected(415, f"unsupported format {fmt}")
    return Probe(fmt, kind, axes)


def _strip_path(message: str, path: Path) -> str:
    """Readers name the file they read; the client should not see server paths."""
    return message.replace(str(path), "upload").replace(path.name, "upload")


def _check_frame(h: int, w: int, frames: int, settings: ServeSettings, what: str) -> None:
    if h < 1 or w < 1:
        raise UploadRejected(422, f"{what} declares an empty image ({h} x {w})")
    if h * w > settings.max_frame_pixels:
        raise UploadRejected(413, f"{what} frames are {w} x {h} = {h * w:,} pixels; the limit "
                                  f"is {settings.max_frame_pixels:,} (--max-frame-pixels)")
    if frames > settings.max_frames:
        raise UploadRejected(413, f"{what} has {frames:,} frames; the limit is "
                                  f"{settings.max_frames:,} (--max-frames)")


def _pillow_geometry(path: Path, fmt: str, settings: ServeSettings) -> AxisGeometry:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:  # lazy: reads the header only
            w, h = img.size
            _check_frame(h, w, 1, settings, fmt)
            frames = int(getattr(img, "n_frames", 1))
            _check_frame(h, w, frames, settings, fmt)
            for k in range(1, frames):  # pages of a TIFF may differ; all must fit one geometry
                img.seek(k)
                if img.size != (w, h):
                    raise UploadRejected(422, f"{fmt} pages have different sizes ({w} x {h} and "
                                              f"{img.size[0]} x {img.size[1]}); upload one page")
    except Image.DecompressionBombError as exc:
        raise UploadRejected(413, f"{fmt} refused as a decompression bomb: {exc}") from exc
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, EOFError) as exc:
        if isinstance(exc, UploadRejected):
            raise
        raise UploadRejected(422, f"cannot read the {fmt} header: {exc}") from exc
    return AxisGeometry(frames, h, w)


def _dicom_geometry(path: Path, settings: ServeSettings) -> AxisGeometry:
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError as exc:
        raise UploadRejected(415, "this server cannot read DICOM: install ultrasam[dicom]") \
            from exc
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
        if str(meta.get("TransferSyntaxUID", "")) == _DEFLATED_DICOM:
            raise UploadRejected(415, "deflated DICOM (transfer syntax "
                                      f"{_DEFLATED_DICOM}) is not accepted; re-save it "
                                      "uncompressed or with an image codec")
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, AttributeError) as exc:
        if isinstance(exc, UploadRejected):
            raise
        # No file meta (no preamble): the dataset itself is read with force below.
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise UploadRejected(422, f"cannot read the DICOM header: {exc}") from exc
    if not rows or not cols:
        raise UploadRejected(422, "the DICOM file holds no image (no Rows/Columns)")
    _check_frame(rows, cols, frames, settings, "DICOM")
    return AxisGeometry(max(frames, 1), rows, cols)


def _nifti_shape_zyx(path: Path, settings: ServeSettings) -> tuple[int, int, int]:
    from ultrasam.io.volumes import require_nibabel

    try:
        nib = require_nibabel()
    except ImportError as exc:
        raise UploadRejected(415, f"this server cannot read NIfTI: {exc}") from exc
    try:
        img = nib.load(str(path))  # reads the header only
        shape = tuple(int(s) for s in img.shape)
        itemsize = int(img.get_data_dtype().itemsize)
    except Exception as exc:  # nibabel raises many types for malformed headers
        raise UploadRejected(422, _strip_path(f"cannot read the NIfTI header: {exc}", path)) \
            from exc
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise UploadRejected(422, f"NIfTI of shape {shape} is not a 2-D image or a 3-D volume")
    xyz = shape + (1,) * (3 - len(shape))
    _check_volume_bytes(xyz[0] * xyz[1] * xyz[2] * itemsize, "NIfTI", settings)
    return xyz[2], xyz[1], xyz[0]


def _metaimage_shape_zyx(path: Path, settings: ServeSettings) -> tuple[int, int, int]:
    from ultrasam.io.volumes import parse_metaimage_header

    raw = path.read_bytes()
    try:
        fields, offset = parse_metaimage_header(raw[: 1 << 16], "upload")
        ndims = int(fields.get("NDims", "0"))
        dims = [int(v) for v in fields.get("DimSize", "").split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except (ValueError, KeyError) as exc:
        raise UploadRejected(422, f"malformed MetaImage header: {exc}") from exc
    if fields.get("ElementDataFile", "").upper() != "LOCAL":
        raise UploadRejected(422, "MetaImage data must be inside the file (ElementDataFile = "
                                  "LOCAL, a .mha); a header naming another file (.mhd + .raw) "
                                  "cannot be uploaded")
    if ndims not in (2, 3) or len(dims) != ndims or min(dims, default=0) < 1 or channels < 1:
        raise UploadRejected(422, f"MetaImage with NDims={ndims}, DimSize={dims} is not a 2-D "
                                  "image or a 3-D volume")
    xyz = dims + [1] * (3 - ndims)
    expected = xyz[0] * xyz[1] * xyz[2] * channels * _MAX_BYTES_PER_ELEMENT
    _check_volume_bytes(expected, "MetaImage", settings)
    if fields.get("CompressedData", "False").lower() == "true":
        # Inflate in bounded steps: a payload that grows past the largest possible volume is a
        # zip bomb, refused before it fills memory.
        _check_inflated_size(raw[offset:], expected)
    return xyz[2], xyz[1], xyz[0]


def _check_volume_bytes(n: int, what: str, settings: ServeSettings) -> None:
    if n > settings.max_decoded_bytes:
        raise UploadRejected(413, f"{what} volume decodes to {n / 2**20:,.0f} MiB; the limit is "
                                  f"{settings.max_decoded_mb:,.0f} MiB (--max-decoded-mb)")


def _check_inflated_size(payload: bytes, limit: int) -> None:
    inflater = zlib.decompressobj()
    total = 0
    data = payload
    try:
        while data:
            chunk = inflater.decompress(data, 1 << 20)
            total += len(chunk)
            if total > limit:
                raise UploadRejected(413, "compressed MetaImage data inflates beyond the size "
                                          "its header declares")
            data = inflater.unconsumed_tail
    except zlib.error as exc:
        raise UploadRejected(422, f"corrupt compressed MetaImage data ({exc})") from exc


def _volume_axes(zyx: tuple[int, int, int], settings: ServeSettings
                 ) -> tuple[AxisGeometry, ...]:
    """Slices along ITK axes 0 (z: y x x), 1 (y: z x x) and 2 (x: z x y)."""
    z, y, x = zyx
    axes = (AxisGeometry(z, y, x), AxisGeometry(y, z, x), AxisGeometry(x, z, y))
    for a in axes:
        _check_frame(a.height, a.width, a.frames, settings, "volume")
    return axes
