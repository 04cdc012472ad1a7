"""What every dataset source declares, and the signature of its converter."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from ..coco import CocoWriter

Kind = Literal["2d", "3d", "video", "frames"]


@dataclass(frozen=True)
class SourceSpec:
    """A public dataset: where it comes from, what it holds and how it is licensed.

    ``structures`` are the COCO category names the converter emits, in id order.
    ``us43d``: part of UltraSam's 43 datasets (False for the extras).
    """

    name: str
    aliases: tuple[str, ...]
    url: str
    citation: str
    licence: str
    anatomy: str
    structures: tuple[str, ...]
    kind: Kind
    native_format: str
    us43d: bool = True
    real_sample_tests: bool = False
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict)


Converter = Callable[[Path, CocoWriter], None]


@dataclass(frozen=True)
class Source:
    """A spec plus its converter: ``convert(native_dir, writer)`` reads, never modifies, the tree."""

    spec: SourceSpec
    convert: Converter
