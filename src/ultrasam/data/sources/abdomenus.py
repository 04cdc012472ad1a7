"""AbdomenUS: abdominal ultrasound with colour-coded organ maps (Kaggle "ussimandsegm").

Native layout: ``.../images/[<split>/]x.png`` and ``.../annotations/[<split>/]x.png`` (same relative
name; any image suffix), the annotation an RGB colour map. The bundle mixes real scans (``RUS``)
and CT-simulated ones (``AUS``, "artificial ultrasound"): paths with an ``AUS`` folder are
synthetic and skipped. A ``train`` / ``test`` folder gives the split.

Colours: liver (100,0,100), kidney (255,255,0), pancreas (0,0,255), vessels (255,0,0), adrenals
(0,255,255), gallbladder (0,255,0), bones (255,255,255), spleen (255,0,255); black is background.
Pixels of any other colour are warned about (with their count) and left out.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..coco import CocoWriter, SPLIT_NAMES
from ._base import Source, SourceSpec
from ._entry_io import add_or_warn
from ._pairs import read_entry_pair
from ._read import IMAGE_SUFFIXES, colour_match, natural_key
from ._tree import NativeTree, TreeEntry

COLOURS: dict[tuple[int, int, int], str] = {
    (100, 0, 100): "liver", (255, 255, 0): "kidney", (0, 0, 255): "pancreas",
    (255, 0, 0): "blood_vessel", (0, 255, 255): "adrenal_gland", (0, 255, 0): "gallbladder",
    (255, 255, 255): "bone", (255, 0, 255): "spleen",
}


def _key(e: TreeEntry, folder: str) -> str | None:
    """The path with the ``images``/``annotations`` folder removed and no suffix."""
    low = [p.lower() for p in e.parts]
    if folder not in low[:-1]:
        return None
    i = len(low) - 2 - low[:-1][::-1].index(folder)
    return "/".join((*e.parts[:i], *e.parts[i + 1:-1], e.stem))


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Real (non-AUS) images paired with their colour maps."""
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        files = [e for e in tree.files() if e.suffix in IMAGE_SUFFIXES
                 and "aus" not in (p.lower() for p in e.parts[:-1])]
        images = {k: e for e in files if (k := _key(e, "images")) is not None}
        annots = {k: e for e in files if (k := _key(e, "annotations")) is not None}
        for key in sorted(images, key=natural_key):
            img_e = images[key]
            if key not in annots:
                writer.warn(img_e.path, "no annotation with the same name; skipped")
                continue
            read = read_entry_pair(img_e, annots[key], writer)
            if read is None:
                continue
            image, colour = read
            if colour.ndim != 3 or colour.shape[2] < 3:
                writer.warn(annots[key].path, f"annotation is not an RGB colour map "
                                              f"(shape {colour.shape}); skipped")
                continue
            masks = {s: np.zeros(colour.shape[:2], bool) for s in COLOURS.values()}
            known = colour_match(colour, (0, 0, 0))
            for rgb, structure in COLOURS.items():
                hit = colour_match(colour, rgb)
                masks[structure] |= hit
                known |= hit
            if not known.all():
                odd = {tuple(int(v) for v in c) for c in colour[..., :3][~known][:1000]}
                writer.warn(annots[key].path, f"{int((~known).sum())} pixels of unknown colours "
                                              f"(e.g. {sorted(odd)[:5]}) left out")
            split = next((SPLIT_NAMES[p.lower()] for p in img_e.parts[:-1]
                          if p.lower() in SPLIT_NAMES), None)
            add_or_warn(writer, image, masks, img_e.path, split=split)


SOURCE = Source(
    spec=SourceSpec(
        name="AbdomenUS",
        aliases=("ussimandsegm", "Abdomen US", "AbdomenUS_real"),
        url="https://www.kaggle.com/datasets/ignaciorlando/ussimandsegm",
        citation="Vitale et al., Improving realism in patient-specific abdominal ultrasound "
                 "simulation using CycleGANs, IJCARS 15 (2020)",
        licence="unknown — check upstream (Kaggle dataset page)",
        anatomy="abdomen",
        structures=tuple(dict.fromkeys(COLOURS.values())),
        kind="2d",
        native_format="images/ + annotations/ RGB colour maps (AUS = synthetic, skipped; "
                      "RUS = real)",
    ),
    convert=convert,
)
