"""Image readers: files and arrays -> RGB uint8 for the model, with physical spacing.

``load_image`` recognises PNG/JPEG/TIFF/BMP/GIF/WebP, DICOM (``ultrasam[dicom]``), NIfTI
(``ultrasam[volumes]``) and MetaImage; ``to_rgb_uint8`` holds the documented conversion rules.
DICOM and volume readers import their optional dependencies only when used.
"""

from __future__ import annotations

from ultrasam.io.images import LoadedImage, to_rgb_uint8
from ultrasam.io.load import load_image

__all__ = ["LoadedImage", "load_image", "to_rgb_uint8"]
