"""DICOM frames (one at a time) and ultrasound calibration.

Frames. A multi-frame cine is read frame by frame: only the requested frame is read from the
file and decoded (``pydicom.pixels.pixel_array(path, index=k)``), never the whole cine. Pixels are
decoded *raw* and the photometric interpretation is handled here:

* ``YBR_FULL`` / ``YBR_FULL_422`` -> RGB with DICOM's BT.601 full-range equations (the 4:2:2
  chroma is already upsampled by the decoder); JPEG 2000 ``YBR_RCT``/``YBR_ICT`` come out of the
  decoder as RGB already (the colour transform is part of JPEG 2000 decoding).
* ``PALETTE COLOR`` -> RGB through the palette; 16-bit palette entries are reduced to 8 bits by
  dropping the low byte (their declared depth, not min-max, so colours stay true).
* ``MONOCHROME2`` grey by :func:`ultrasam.io.images.to_rgb_uint8` (uint8 unchanged, wider
  integers min-max scaled); ``MONOCHROME1`` is inverted after scaling (0 is white there).

Calibration. Ultrasound stores physical pixel size per *region* in SequenceOfUltrasoundRegions:
each region has inclusive pixel bounds (RegionLocationMinX0, MinY0, MaxX1, MaxY1) and
PhysicalDeltaX/Y in the units of PhysicalUnitsX/YDirection (3 = cm). Rules used here:

1. A region calibrates space when both unit codes are 3 (cm) and its deltas are non-zero; its
   spacing is ``(|PhysicalDeltaY| * 10, |PhysicalDeltaX| * 10)`` mm = (row_mm, col_mm).
2. Such a region is trusted only when its bounds lie inside the frame (a Max equal to the frame
   size, one past the last pixel, is a common vendor off-by-one and is accepted and clipped).
   Bounds outside the frame mean the image was resized or cropped after calibration (pydicom's
   example cine: regions up to x=595 in a 320-pixel-wide frame), so the region's spacing no longer
   applies: it is refused, with a warning naming the bounds and the frame size.
3. The image-level ``spacing_mm`` is the common spacing of the trusted regions; ``None`` with a
   warning when there are none, or when they disagree (then use :func:`region_spacing_for_mask`).
4. Without any ultrasound region, ``PixelSpacing`` (then ``ImagerPixelSpacing``) is used, with a
   warning for ultrasound files and for ImagerPixelSpacing: neither is standard for ultrasound, and ImagerPixelSpacing is measured at the
   detector, not in the patient. When regions exist but are all refused there is no fallback:
   whatever transformed the image made its other spacing tags stale too.
5. For a mask (:func:`region_spacing_for_mask`): with region calibration, all mask pixels must lie
   in one trusted region, whose spacing is used; otherwise ``None`` and a warning. With the
   PixelSpacing fallback, the image-level spacing applies to any mask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ultrasam.io.images import LoadedImage, to_rgb_uint8, ybr_full_to_rgb

from ..errors import MissingDependencyError

logger = logging.getLogger(__name__)

_CM = 3  # PhysicalUnitsX/YDirection code for centimetres (DICOM PS3.3 C.8.5.5.1.15)
_J2K_SYNTAXES = {
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",  # JPEG 2000 (lossless only / any)
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",  # HTJ2K
}
_MISSING = "reading DICOM needs pydicom and python-gdcm: pip install ultrasam[dicom]"


def _pydicom() -> Any:
    try:
        import pydicom
        import pydicom.pixels  # noqa: F401 - pydicom >= 3
    except ImportError as exc:
        raise MissingDependencyError(_MISSING) from exc
    return pydicom


@dataclass(frozen=True)
class UltrasoundRegion:
    """One spatially calibrated ultrasound region that lies inside the frame.

    Bounds are inclusive pixel indices (x = column, y = row), clipped to the frame.
    ``spacing_mm`` is ``(row_mm, col_mm)``.
    """

    index: int
    x0: int
    y0: int
    x1: int
    y1: int
    spacing_mm: tuple[float, float]

    def contains(self, rows: np.ndarray, cols: np.ndarray) -> bool:
        """Whether every pixel (rows[i], cols[i]) lies inside this region."""
        return bool(((rows >= self.y0) & (rows <= self.y1)
                     & (cols >= self.x0) & (cols <= self.x1)).all())


@dataclass(frozen=True)
class Calibration:
    """Physical calibration of one DICOM frame (see the module docstring for the rules).

    Attributes:
        spacing_mm: image-level ``(row_mm, col_mm)`` or ``None``.
        regions: trusted spatial ultrasound regions (inside the frame).
        source: ``"ultrasound_regions"``, ``"PixelSpacing"``, ``"ImagerPixelSpacing"`` or
            ``None`` (no usable calibration).
        warnings: why something was refused or what the fallback means.
    """

    spacing_mm: tuple[float, float] | None
    regions: tuple[UltrasoundRegion, ...] = ()
    source: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _same(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(abs(x - y) <= 1e-6 * max(abs(x), abs(y), 1e-12) for x, y in zip(a, b))


def read_calibration(ds: Any, rows: int, cols: int) -> Calibration:
    """Calibration of a ``rows`` x ``cols`` frame from a pydicom dataset (header is enough)."""
    warnings: list[str] = []
    regions_seq = ds.get("SequenceOfUltrasoundRegions")
    if regions_seq:
        trusted: list[UltrasoundRegion] = []
        n_spatial = 0
        for i, reg in enumerate(regions_seq):
            ux, uy = reg.get("PhysicalUnitsXDirection"), reg.get("PhysicalUnitsYDirection")
            dx, dy = reg.get("PhysicalDeltaX"), reg.get("PhysicalDeltaY")
            if ux != _CM or uy != _CM or not dx or not dy:
                continue  # Doppler, M-mode, waveform... regions: not spatial in both axes
            n_spatial += 1
            bx0, by0 = int(reg.RegionLocationMinX0), int(reg.RegionLocationMinY0)
            bx1, by1 = int(reg.RegionLocationMaxX1), int(reg.RegionLocationMaxY1)
            if bx0 < 0 or by0 < 0 or bx1 > cols or by1 > rows or bx0 > bx1 or by0 > by1:
                warnings.append(
                    f"ultrasound region {i} spans x {bx0}..{bx1}, y {by0}..{by1} but the frame "
                    f"is {cols}x{rows} (width x height): the image was resized or cropped after "
                    "calibration, so its physical spacing does not apply")
                continue
            spacing = (abs(float(dy)) * 10.0, abs(float(dx)) * 10.0)
            trusted.append(UltrasoundRegion(i, bx0, by0, min(bx1, cols - 1), min(by1, rows - 1),
                                            spacing))
        if trusted:
            first = trusted[0].spacing_mm
            if all(_same(r.spacing_mm, first) for r in trusted):
                return Calibration(first, tuple(trusted), "ultrasound_regions", tuple(warnings))
            warnings.append(
                "ultrasound regions have different spacings; no single image spacing (an area "
                "can still be measured for a mask inside one region)")
            return Calibration(None, tuple(trusted), "ultrasound_regions", tuple(warnings))
        if n_spatial == 0:
            warnings.append("no ultrasound region is calibrated in cm in both directions")
        warnings.append("no physical calibration: area in mm^2 is not available")
        return Calibration(None, (), None, tuple(warnings))
    for tag, meaning in (
        ("PixelSpacing", "PixelSpacing is not the standard ultrasound calibration "
                         "(SequenceOfUltrasoundRegions); check it before trusting areas"),
        ("ImagerPixelSpacing", "ImagerPixelSpacing is measured at the detector, not in the "
                               "patient; areas may be off by the geometric magnification"),
    ):
        value = ds.get(tag)
        if value is not None and len(value) == 2 and float(value[0]) > 0 and float(value[1]) > 0:
            if tag == "ImagerPixelSpacing" or ds.get("Modality") == "US":
                warnings.append(f"spacing from {tag}: {meaning}")
            return Calibration((float(value[0]), float(value[1])), (), tag, tuple(warnings))
    return Calibration(None, (), None, ("the file carries no physical calibration",))


def region_spacing_for_mask(
    mask: np.ndarray, calibration: Calibration
) -> tuple[tuple[float, float] | None, list[str]]:
    """Spacing ``(row_mm, col_mm)`` that applies to ``mask`` (H x W bool), with warnings.

    Rule: with ultrasound-region calibration, every pixel of the mask must lie in one trusted
    region (the first such region, in file order, is used); a mask crossing a region border or
    lying outside every region gets ``None``. With a PixelSpacing fallback the image spacing
    applies to any mask. An empty mask gets ``None``.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {m.shape}")
    rows, cols = np.nonzero(m)
    if rows.size == 0:
        return None, ["mask is empty: no area to measure"]
    if calibration.source in ("PixelSpacing", "ImagerPixelSpacing"):
        return calibration.spacing_mm, []
    if not calibration.regions:
        return None, ["no physical calibration: area in mm^2 is not available"]
    for region in calibration.regions:
        if region.contains(rows, cols):
            return region.spacing_mm, []
    return None, ["mask does not lie inside a single calibrated ultrasound region; "
                  "area in mm^2 is not available"]


def mask_area_mm2(mask: np.ndarray, calibration: Calibration) -> tuple[float | None, list[str]]:
    """Area of ``mask`` (H x W bool) in mm^2 by :func:`region_spacing_for_mask`'s rule."""
    spacing, warnings = region_spacing_for_mask(mask, calibration)
    if spacing is None:
        return None, warnings
    return float(np.count_nonzero(mask)) * spacing[0] * spacing[1], warnings


def _frame_to_rgb(arr: np.ndarray, ds: Any, photometric: str, tsyntax: str) -> np.ndarray:
    """Decoded raw frame (rows x cols [x samples]) -> rows x cols x 3 uint8 RGB."""
    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        if arr.dtype != np.uint8:
            raise ValueError(f"{photometric} with {arr.dtype} samples is not supported")
        return ybr_full_to_rgb(arr)
    if photometric in ("YBR_RCT", "YBR_ICT") and tsyntax in _J2K_SYNTAXES:
        return to_rgb_uint8(arr)  # the JPEG 2000 decoder already applied the colour transform
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        if bits > 8:
            rgb = rgb >> (bits - 8)
        return np.ascontiguousarray(rgb.astype(np.uint8))
    if photometric == "RGB":
        return to_rgb_uint8(arr)
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if arr.dtype != np.uint8 and "WindowCenter" in ds:
            from pydicom.pixels import apply_voi_lut

            arr = apply_voi_lut(arr, ds)
        rgb = to_rgb_uint8(arr)
        return 255 - rgb if photometric == "MONOCHROME1" else rgb
    raise ValueError(f"unsupported PhotometricInterpretation {photometric!r}")


def load_dicom(path: str | Path, frame: int | None = None) -> LoadedImage:
    """Read one frame of a DICOM file as RGB uint8 with its calibration.

    Args:
        path: the DICOM file.
        frame: frame index of a multi-frame file; ``None`` means 0 (with a warning when the file
            has several frames).

    Returns:
        :class:`LoadedImage` with ``meta`` keys ``format`` ("DICOM"), ``frame``, ``n_frames``,
        ``photometric``, ``transfer_syntax``, ``modality`` and ``calibration``
        (a :class:`Calibration`).

    Raises:
        ImportError: pydicom is missing (``pip install ultrasam[dicom]``).
        ValueError: not a readable image DICOM, corrupt/truncated, frame out of range, or a
            compression no installed decoder handles.
    """
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import pixel_array

    path = str(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as exc:
        raise ValueError(f"cannot read DICOM {path}: {exc}") from exc
    if "Rows" not in ds or "Columns" not in ds:
        raise ValueError(f"{path}: DICOM file holds no image (no Rows/Columns; truncated, or "
                         "not an image object)")
    n_frames = int(ds.get("NumberOfFrames") or 1)
    warnings: list[str] = []
    if frame is None:
        index = 0
        if n_frames > 1:
            warnings.append(f"DICOM cine has {n_frames} frames; using frame 0 "
                            f"(pass frame=K with 0 <= K <= {n_frames - 1})")
    else:
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
            raise TypeError(f"frame must be an int, got {type(frame).__name__}")
        if not 0 <= int(frame) < n_frames:
            raise ValueError(f"{path}: frame {frame} is out of range; valid frames are "
                             f"0..{n_frames - 1}")
        index = int(frame)
    tsyntax = str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", ""))
    try:
        # raw=True: no colour conversion by pydicom; _frame_to_rgb does it (see module docs).
        arr = pixel_array(path, index=index if n_frames > 1 else None, raw=True)
    except (RuntimeError, NotImplementedError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"cannot decode DICOM {path} (transfer syntax {tsyntax}): the pixel data is corrupt "
            "or truncated, or no installed decoder handles it (python-gdcm, from pip install "
            f"ultrasam[dicom], adds JPEG-LS and JPEG 2000): {reason}") from exc
    except (OSError, EOFError, ValueError, AttributeError, KeyError) as exc:
        raise ValueError(f"cannot read DICOM {path}: corrupt or truncated pixel data ({exc})") \
            from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    rgb = _frame_to_rgb(arr, ds, photometric, tsyntax)
    rows, cols = rgb.shape[:2]
    calibration = read_calibration(ds, rows, cols)
    warnings.extend(calibration.warnings)
    meta = {
        "format": "DICOM", "frame": index, "n_frames": n_frames, "photometric": photometric,
        "transfer_syntax": tsyntax, "modality": str(ds.get("Modality", "")),
        "calibration": calibration, "shape": tuple(arr.shape),
    }
    return LoadedImage(rgb=rgb, spacing_mm=calibration.spacing_mm, warnings=warnings,
                       source=path, meta=meta)
