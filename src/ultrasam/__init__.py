"""ultrasam: SAM-family promptable segmentation for ultrasound.

Public API only; importing this package has no side effects.
"""

from __future__ import annotations

__version__ = "0.1.0"
