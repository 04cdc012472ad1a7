"""The literal table of dataset sources: US-43d's 43 entries plus two extras.

Each entry names a module under ``ultrasam.data.sources`` that defines ``SOURCE`` (a
:class:`~ultrasam.data.sources._base.Source`). Modules are imported on first use so that listing
sources stays cheap and optional readers (nibabel, h5py, ...) load only when converting.
"""

from __future__ import annotations

import importlib

from ..errors import UnknownNameError
from .sources._base import Source

# Order follows the US-43d table in the documentation; the two extras come last.
SOURCE_MODULES: tuple[str, ...] = (
    "us105", "acouslic", "asus", "aul", "abdomenus", "buid", "busbra", "bus_b", "busi",
    "bus_uc", "bus_uclm", "breast", "camus", "cardiacudc", "ccaui", "ddti", "echonet_dynamic",
    "echonet_pediatric", "fallmud", "fass", "fast_unet", "fh_ps_aop", "gist514", "hc18",
    "luss_phantom", "microseg", "mmotu2d", "mmotu3d", "mup", "regpro", "s1", "segthy",
    "stmus_nda", "stu_hospital", "tg3k", "thyroid_cineclip", "tn3k", "tnscui", "upbd", "nerve",
    "brachial_plexus", "echocp", "kidneyus",
    # extras present in shared/data/native-samples
    "psfhs", "usgra",
)


def all_sources() -> list[Source]:
    """Every registered source, in table order."""
    return [importlib.import_module(f"{__package__}.sources.{m}").SOURCE for m in SOURCE_MODULES]


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def get_source(name: str) -> Source:
    """The source whose name or one of whose aliases matches ``name``.

    Matching ignores case and punctuation ("BUS-UCLM" == "bus_uclm"). Raises ``KeyError``
    listing the known names otherwise.
    """
    wanted = _key(name)
    sources = all_sources()
    for source in sources:
        if wanted in {_key(n) for n in (source.spec.name, *source.spec.aliases)}:
            return source
    known = ", ".join(s.spec.name for s in sources)
    raise UnknownNameError(f"no dataset source named {name!r}; known: {known}")
