"""EchoNet-Pediatric: paediatric echo videos (A4C and PSAX views) with left-ventricle tracings.

Native layout: ``{A4C,PSAX}/Videos/<name>.avi`` and, per view, ``VolumeTracings.csv`` with
columns ``FileName,X,Y,Frame``: the rows of one (file, frame) are the outline points in order.
``Frame`` is 1-based here (unlike EchoNet-Dynamic): the stored ``frame`` is the 0-based index
into the decoded video, ``Frame - 1``. ``group`` = the video; the view is kept in the file name.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._tree import NativeTree
from .echonet_dynamic import Polygon, convert_traced_videos, read_csv, video_key

VIEWS = ("A4C", "PSAX")


def _outlines(rows: list[dict[str, str]], writer: CocoWriter,
              csv_path: str) -> dict[str, dict[int, Polygon]]:
    out: dict[str, dict[int, Polygon]] = {}
    for n, row in enumerate(rows, start=2):
        try:
            key, frame = video_key(row["FileName"]), int(float(row["Frame"]))
            point = (float(row["X"]), float(row["Y"]))
        except (KeyError, TypeError, ValueError) as e:
            writer.warn(csv_path, f"line {n}: unreadable row ({e}); skipped")
            continue
        if frame < 1:
            writer.warn(csv_path, f"line {n}: frame {frame} but frames are 1-based; skipped")
            continue
        out.setdefault(key, {}).setdefault(frame - 1, []).append(point)
    return out


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """One image per traced frame of each view's videos."""
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        entries = tree.files()
        tracings = [e for e in entries if e.name.lower() == "volumetracings.csv"]
        if not tracings:
            raise FileNotFoundError(f"no VolumeTracings.csv under {native_dir}")
        for csv_e in tracings:
            # The view folder holds both the CSV and Videos/: match videos under the same folder.
            view = next((p for p in reversed(csv_e.parts[:-1]) if p.upper() in VIEWS), "")
            prefix = f"{csv_e.parent}/" if csv_e.parent else ""
            videos = {video_key(e.name): e for e in entries
                      if e.suffix == ".avi" and e.path.startswith(prefix)}
            traces = _outlines(read_csv(csv_e, writer), writer, csv_e.path)
            convert_traced_videos(writer, videos, traces, csv_e.path, view=view.upper())


SOURCE = Source(
    spec=SourceSpec(
        name="EchoNet-Pediatric",
        aliases=("EchoNet Pediatric", "EchoNetPediatric"),
        url="https://echonet.github.io/pediatric/",
        citation="Reddy et al., Video-based deep learning for automated assessment of left "
                 "ventricular ejection fraction in pediatric patients, J Am Soc Echocardiogr "
                 "36(5) (2023)",
        licence="Stanford University Dataset Research Use Agreement (non-commercial) — check "
                "upstream",
        anatomy="heart",
        structures=("left_ventricle",),
        kind="video",
        native_format="{A4C,PSAX}/Videos/*.avi + {A4C,PSAX}/VolumeTracings.csv "
                      "(FileName,X,Y,Frame; frames 1-based)",
    ),
    convert=convert,
)
