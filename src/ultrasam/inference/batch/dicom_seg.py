"""DICOM SEG objects for DICOM inputs, written with highdicom (extra ``dicomseg``).

One SEG per item: each object is a binary segment (numbered from 1, labelled ``object K``)
referencing the source image. Multi-frame sources are supported when they carry a Frame of
Reference; ultrasound cines usually do not, and highdicom (rightly) will not invent one, so for
them the item gets a warning instead of a SEG.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import MissingDependencyError

_MISSING = "writing DICOM SEG needs highdicom: pip install ultrasam[dicomseg]"


def require_highdicom() -> Any:
    """The highdicom module, or ImportError naming the extra to install."""
    try:
        import highdicom
    except ImportError as e:
        raise MissingDependencyError(_MISSING) from e
    return highdicom


def build_dicom_seg(source: str | Path, frame: int | None, masks: list[np.ndarray],
                    software_version: str) -> Any:
    """A highdicom ``Segmentation`` of H x W bool ``masks`` (one per object) on ``source``.

    Raises:
        ValueError: the masks do not match the source's frame size, or highdicom refuses the
            source (e.g. a multi-frame cine without a Frame of Reference).
    """
    hd = require_highdicom()
    import pydicom
    from pydicom.sr.codedict import codes

    ds = pydicom.dcmread(str(source), stop_before_pixels=True)
    rows, cols = int(ds.Rows), int(ds.Columns)
    if masks[0].shape != (rows, cols):
        raise ValueError(f"mask {masks[0].shape} does not match the DICOM frame {rows}x{cols}")
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    stack = np.stack(masks, axis=-1).astype(np.uint8)  # H x W x S, one channel per segment
    if n_frames > 1:
        pixels = np.zeros((n_frames, rows, cols, len(masks)), np.uint8)
        pixels[frame or 0] = stack
    else:
        pixels = stack[None]
    algorithm = hd.AlgorithmIdentificationSequence(
        name="ultrasam", version=software_version,
        family=codes.cid7162.ArtificialIntelligence)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k + 1, segment_label=f"object {k + 1}",
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm)
        for k in range(len(masks))]
    with warnings.catch_warnings():
        # highdicom warns about the source's own attribute style (e.g. one-part patient names).
        warnings.simplefilter("ignore", UserWarning)
        try:
            return hd.seg.Segmentation(
                source_images=[ds], pixel_array=pixels,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions, series_instance_uid=hd.UID(),
                series_number=900, sop_instance_uid=hd.UID(), instance_number=1,
                manufacturer="ultrasam", manufacturer_model_name="ultrasam",
                software_versions=software_version, device_serial_number="0",
                omit_empty_frames=False)
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"DICOM SEG not written: {e}") from e


def write_dicom_seg(path: Path, source: str | Path, frame: int | None, masks: list[np.ndarray],
                    software_version: str) -> None:
    """Build the SEG (see :func:`build_dicom_seg`) and save it to ``path`` atomically."""
    import io

    from .files import write_bytes_atomic

    seg = build_dicom_seg(source, frame, masks, software_version)
    buf = io.BytesIO()
    seg.save_as(buf)
    write_bytes_atomic(path, buf.getvalue())
