"""EchoNet-Dynamic: apical four-chamber echo videos with left-ventricle tracings (Stanford).

Native layout: ``Videos/<name>.avi`` (112 x 112), ``VolumeTracings.csv`` with columns
``FileName,X1,Y1,X2,Y2,Frame`` and ``FileList.csv`` (``FileName``, ..., ``Split`` =
TRAIN/VAL/TEST). For each traced frame (end-diastole and end-systole; ``Frame`` is 0-based), the
first row is the long axis of the ventricle and is excluded; the other rows are the chords
perpendicular to it, whose two ends run down either side of the wall, so the outline is
``(X1, Y1)`` in row order followed by ``(X2, Y2)`` in reverse row order. ``group`` = the video.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._entry_io import add_or_warn, local_file, polygon_mask
from ._read import to_grey_if_uniform
from ._tables import read_csv_dicts
from ._tree import NativeTree, TreeEntry
from ._volumes import read_video

Polygon = list[tuple[float, float]]


def read_csv(entry: TreeEntry, writer: CocoWriter) -> list[dict[str, str]]:
    """Rows of a CSV entry (UTF-8, BOM tolerated) as dicts keyed by header; a row that cannot be
    read is skipped with a warning naming the file and row (:mod:`._tables`)."""
    try:
        data = entry.read_bytes()
    except OSError as e:
        writer.warn(entry.path, f"cannot read: {e}; file skipped")
        return []
    return [row for _, row in read_csv_dicts(data, entry.path, writer.warn)]


def video_key(name: str) -> str:
    """File name without directory or ``.avi`` suffix, lower-cased (FileList omits the suffix)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return (base[:-4] if base.lower().endswith(".avi") else base).lower()


def convert_traced_videos(writer: CocoWriter, videos: Mapping[str, TreeEntry],
                          traces: Mapping[str, Mapping[int, Sequence[tuple[float, float]]]],
                          csv_path: str, *, splits: Mapping[str, str] | None = None,
                          view: str = "") -> None:
    """Add every traced frame (0-based index) of every video as one ``left_ventricle`` image.

    ``videos``: video key -> entry; ``traces``: video key -> {frame index: outline points}.
    Frames past the end of the video, missing videos and degenerate outlines are warned about.
    """
    for key in sorted(traces):
        if key not in videos:
            writer.warn(csv_path, f"tracings for {key!r} but no such video; skipped")
            continue
        entry = videos[key]
        wanted = dict(traces[key])
        try:
            with local_file(entry) as path:
                frames = dict(read_video(path, frames=set(wanted)))
        except (ValueError, OSError) as e:
            writer.warn(entry.path, f"cannot decode video: {e}")
            continue
        for index in sorted(wanted):
            if index not in frames:
                writer.warn(entry.path, f"traced frame {index} is past the end of the video; "
                                        "skipped")
                continue
            image = to_grey_if_uniform(frames[index])
            try:
                mask = polygon_mask([wanted[index]], image.shape[:2])
            except ValueError as e:
                writer.warn(csv_path, f"{key} frame {index}: {e}; skipped")
                continue
            add_or_warn(writer, image, {"left_ventricle": mask}, entry.path, group=key,
                        frame=index, split=(splits or {}).get(key),
                        name_parts=(view, entry.stem))


def _outlines(rows: list[dict[str, str]], writer: CocoWriter,
              csv_path: str) -> dict[str, dict[int, Polygon]]:
    chords: dict[str, dict[int, list[tuple[float, float, float, float]]]] = {}
    for n, row in enumerate(rows, start=2):
        try:
            key, frame = video_key(row["FileName"]), int(float(row["Frame"]))
            chord = (float(row["X1"]), float(row["Y1"]), float(row["X2"]), float(row["Y2"]))
        except (KeyError, TypeError, ValueError) as e:
            writer.warn(csv_path, f"line {n}: unreadable row ({e}); skipped")
            continue
        chords.setdefault(key, {}).setdefault(frame, []).append(chord)
    out: dict[str, dict[int, Polygon]] = {}
    for key, frames in chords.items():
        for frame, rows_ in frames.items():
            body = rows_[1:]  # the first row is the long axis, not part of the outline
            out.setdefault(key, {})[frame] = ([(x1, y1) for x1, y1, _, _ in body]
                                              + [(x2, y2) for _, _, x2, y2 in reversed(body)])
    return out


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """One image per traced frame, with the official split from ``FileList.csv``."""
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        entries = tree.files()
        videos = {video_key(e.name): e for e in entries if e.suffix == ".avi"}
        tracing = [e for e in entries if e.name.lower() == "volumetracings.csv"]
        if not tracing:
            raise FileNotFoundError(f"no VolumeTracings.csv under {native_dir}")
        splits: dict[str, str] = {}
        for fl in (e for e in entries if e.name.lower() == "filelist.csv"):
            for row in read_csv(fl, writer):
                if row.get("FileName") and row.get("Split"):
                    splits[video_key(row["FileName"])] = row["Split"].strip().lower()
        for csv_e in tracing:
            traces = _outlines(read_csv(csv_e, writer), writer, csv_e.path)
            convert_traced_videos(writer, videos, traces, csv_e.path, splits=splits)


SOURCE = Source(
    spec=SourceSpec(
        name="EchoNet-Dynamic",
        aliases=("EchoNet Dynamic", "EchoNetDynamic", "echonet"),
        url="https://echonet.github.io/dynamic/",
        citation="Ouyang et al., Video-based AI for beat-to-beat assessment of cardiac function, "
                 "Nature 580 (2020)",
        licence="Stanford University Dataset Research Use Agreement (non-commercial) — check "
                "upstream",
        anatomy="heart",
        structures=("left_ventricle",),
        kind="video",
        native_format="Videos/*.avi + VolumeTracings.csv (FileName,X1,Y1,X2,Y2,Frame; first row "
                      "per frame = long axis; frames 0-based) + FileList.csv (Split)",
    ),
    convert=convert,
)
