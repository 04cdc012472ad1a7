"""File formats -> :class:`~ultrasam.io.images.LoadedImage`: format sniffing from a file's first
bytes and the :func:`load_image` dispatcher to Pillow, DICOM (:mod:`ultrasam.io.dicom`) and
volume (:mod:`ultrasam.io.volumes`) readers.

The readers import only :mod:`ultrasam.io.images` (the shared type and the conversion rules),
and this module imports them, so the dispatch sits above them and no reader imports another.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .images import LoadedImage, pil_to_array, to_rgb_uint8

# --------------------------------------------------------------------------- format sniffing

_PILLOW_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)
_METAIMAGE_KEYS = (b"ObjectType", b"NDims", b"ObjectSubType", b"Comment", b"TransformType")


def _is_nifti_header(head: bytes) -> bool:
    """NIfTI-1 (348-byte header, magic at 344) or NIfTI-2 (540-byte header, magic at 4)."""
    if len(head) >= 348 and head[344:347] in (b"n+1", b"ni1"):
        return True
    return len(head) >= 8 and head[4:7] in (b"n+2", b"ni2")


def sniff_format(path: Path) -> str:
    """Recognise a file's format from its first bytes (the extension only breaks ties).

    Returns one of ``PNG JPEG TIFF BMP GIF WEBP DICOM NIFTI METAIMAGE``.

    Raises:
        ValueError: empty or unrecognised file (the message names the file and its first bytes).
    """
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head:
        raise ValueError(f"{path}: the file is empty")
    if head[128:132] == b"DICM":
        # First: a DICOM preamble may itself hold a TIFF header (dual-personality files).
        return "DICOM"
    for magic, name in _PILLOW_MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if _is_nifti_header(head):
        return "NIFTI"
    if head[:2] == b"\x1f\x8b":
        import gzip

        try:
            with gzip.open(path, "rb") as g:
                inner = g.read(540)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip file ({exc})") from exc
        if _is_nifti_header(inner):
            return "NIFTI"
        raise ValueError(f"{path}: gzip file that does not hold a NIfTI image")
    if head.lstrip().startswith(_METAIMAGE_KEYS):
        return "METAIMAGE"
    suffix = "".join(path.suffixes[-2:]).lower()
    if path.suffix.lower() in (".dcm", ".dicom"):
        # DICOM without the 128-byte preamble (allowed for old files); pydicom reads it with force.
        return "DICOM"
    if head.startswith(b"NRRD"):
        raise ValueError(
            f"{path}: NRRD is not supported; convert it to NIfTI or MetaImage (e.g. SimpleITK)")
    raise ValueError(
        f"{path}: unrecognised image format (suffix {suffix or 'none'!r}, first bytes "
        f"{head[:8]!r}); expected PNG, JPEG, TIFF, BMP, GIF, WebP, DICOM, NIfTI or MetaImage")


# --------------------------------------------------------------------------- loading files


def _check_volume_args_unused(path: str, fmt: str, slice: int | None, axis: int) -> None:
    if slice is not None or axis != 0:
        raise ValueError(
            f"{path}: slice/axis apply to volumes (NIfTI, MetaImage) only, not to a {fmt} file")


def _load_pillow(path: str, fmt: str, frame: int | None) -> LoadedImage:
    from PIL import Image, UnidentifiedImageError

    warnings: list[str] = []
    try:
        with Image.open(path) as img:
            n_frames = int(getattr(img, "n_frames", 1))
            if frame is None:
                index = 0
                if n_frames > 1:
                    warnings.append(
                        f"{fmt} file has {n_frames} frames/pages; using frame 0 (pass frame=K "
                        f"with 0 <= K <= {n_frames - 1})")
            else:
                index = _check_index("frame", frame, n_frames, path)
            if index:
                img.seek(index)
            img.load()
            orientation = img.getexif().get(0x0112, 1) if hasattr(img, "getexif") else 1
            mode = img.mode
            array = pil_to_array(img)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError,
            Image.DecompressionBombError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(path):
            raise
        raise ValueError(f"cannot read {fmt} image {path}: corrupt or truncated file ({exc})") \
            from exc
    if orientation not in (1, None):
        warnings.append(
            f"EXIF orientation tag is {orientation}; the pixels are used as stored, not rotated")
    rgb = to_rgb_uint8(array)
    meta = {"format": fmt, "mode": mode, "frame": index, "n_frames": n_frames,
            "shape": tuple(array.shape)}
    return LoadedImage(rgb=rgb, spacing_mm=None, warnings=warnings, source=path, meta=meta)


def _check_index(name: str, value: int, count: int, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= int(value) < count:
        raise ValueError(
            f"{path}: {name} {value} is out of range; valid {name}s are 0..{count - 1}")
    return int(value)


def load_image(
    path_or_array: Any,
    frame: int | None = None,
    slice: int | None = None,  # noqa: A002 - the public argument name of Predictor.set_image
    axis: int = 0,
) -> LoadedImage:
    """Load an image file (or convert an in-memory image) to RGB uint8 for the model.

    The format is recognised from the file's first bytes, not only its extension: PNG, JPEG,
    TIFF, BMP, GIF, WebP (Pillow); DICOM (pydicom; the ``dicom`` extra); NIfTI ``.nii``/
    ``.nii.gz`` (nibabel; the ``volumes`` extra); MetaImage ``.mha``/``.mhd`` (own reader).

    Args:
        path_or_array: a path (str or os.PathLike), a numpy array or a PIL image.
        frame: frame of a multi-frame DICOM cine, or page of a multi-page TIFF/GIF. ``None``
            means frame 0, with a warning when there are several.
        slice: index of the 2D slice of a volume (``None``: the middle slice, with a warning).
        axis: which volume axis ``slice`` indexes, in ITK order (0 = z, 1 = y, 2 = x); see
            :mod:`ultrasam.io.volumes`.

    Returns:
        :class:`LoadedImage`; ``rgb`` is H x W x 3 uint8.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: unknown/corrupt/truncated file, frame/slice out of range, unusable image.
        TypeError: input of another type.
        ImportError: the optional reader the file needs is not installed.
    """
    if not isinstance(path_or_array, (str, os.PathLike)):
        rgb = to_rgb_uint8(path_or_array)
        if frame is not None or slice is not None or axis != 0:
            raise ValueError("frame/slice/axis apply to files only, not to an in-memory image")
        source = "array" if isinstance(path_or_array, np.ndarray) else "PIL.Image"
        return LoadedImage(rgb=rgb, source=source, meta={"format": source})
    path = os.fspath(path_or_array)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if p.is_dir():
        raise ValueError(f"{path} is a directory, not an image file")
    fmt = sniff_format(p)
    if fmt in ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP"):
        _check_volume_args_unused(path, fmt, slice, axis)
        return _load_pillow(path, fmt, frame)
    if fmt == "DICOM":
        _check_volume_args_unused(path, fmt, slice, axis)
        from ultrasam.io.dicom import load_dicom

        return load_dicom(path, frame=frame)
    if fmt in ("NIFTI", "METAIMAGE"):
        if frame is not None:
            raise ValueError(f"{path}: frame applies to DICOM/TIFF/GIF; use slice= for volumes")
        from ultrasam.io.volumes import load_volume_slice

        return load_volume_slice(path, slice=slice, axis=axis, fmt=fmt)
    raise AssertionError(f"unhandled format {fmt}")  # sniff_format only returns the above
