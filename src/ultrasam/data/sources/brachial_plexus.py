"""Supraclavicular brachial plexus videos with per-frame nerve and needle masks (Regional-US).

Native layout (the GitHub repository ``Regional-US/brachial_plexus``, folder or archive):
``data/<device>/videos/<video>.mp4``, plexus masks ``data/<device>/ac_masks/<video>/
<video>_NNN.jpg`` and needle masks ``data/<device>/needle/needle_masks/<video>/<video>_NNN.jpg``.
``NNN`` is the 0-based index of the video frame the mask annotates (plexus masks run from 000
for every frame; needle masks exist only for frames showing the needle, so their numbering has
gaps). Masks are pairs by that number — the UltraSam reference paired the i-th needle mask *in
sorted order* with frame i, shifting every needle mask after the first gap.

Masks are JPEG: thresholded at 128. A mask file is a needle mask when a folder of its path
contains ``needle``, otherwise a plexus mask when a folder contains ``mask``. Each annotated
frame becomes an image with its ``frame`` index, ``group`` = the video id, and the device in
the image's ``device`` field; a frame whose masks are all empty stays, without instances (it
was annotated: nothing visible). Masks naming a frame the video does not have, or whose size differs
from the frame, are warned about.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._read import IMAGE_SUFFIXES, UnreadableFile, natural_key, threshold, to_grey_if_uniform
from ._shapes import decode_mask_bytes
from ._tree import NativeTree, TreeEntry
from ._volumes import read_video

SPEC = SourceSpec(
    name="BrachialPlexus-Regional-US",
    aliases=("Regional-US brachial plexus", "brachial_plexus_videos", "BP-Regional-US"),
    url="https://github.com/Regional-US/brachial_plexus",
    citation=("Automated real time delineation of supraclavicular brachial plexus in neck "
              "ultrasonography videos: a deep learning approach (Regional-US, "
              "github.com/Regional-US/brachial_plexus; cite the accompanying paper)."),
    licence="non-commercial data use agreement (as stated in the repository README)",
    anatomy="neck / brachial plexus",
    structures=("brachial_plexus", "needle"),
    kind="video",
    native_format=("data/<device>/videos/*.mp4 + ac_masks/<video>/<video>_NNN.jpg + "
                   "needle/needle_masks/<video>/<video>_NNN.jpg (NNN = frame index)"),
)

_VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
_MASK_NAME = re.compile(r"^(?P<video>.+)_(?P<frame>\d+)$")


def _device(entry: TreeEntry) -> str | None:
    parts = [p for p in entry.parts[:-1]]
    lowered = [p.lower() for p in parts]
    if "data" in lowered and lowered.index("data") + 1 < len(parts):
        return parts[lowered.index("data") + 1]
    return None


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert the brachial plexus videos and masks into ``writer``; see the module docstring."""
    videos: dict[str, TreeEntry] = {}
    masks: dict[str, dict[int, dict[str, TreeEntry]]] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for entry in tree.files():
            if entry.suffix in _VIDEO_SUFFIXES:
                if entry.stem in videos:
                    writer.warn(entry.path, f"second video {entry.stem!r} (first: "
                                            f"{videos[entry.stem].path}); ignored")
                else:
                    videos[entry.stem] = entry
                continue
            if entry.suffix not in IMAGE_SUFFIXES:
                continue
            folders = [p.lower() for p in entry.parts[:-1]]
            if any("needle" in p for p in folders):
                role = "needle"
            elif any("mask" in p for p in folders):
                role = "brachial_plexus"
            else:
                continue
            m = _MASK_NAME.match(entry.stem)
            if m is None:
                writer.warn(entry.path, "mask name has no _NNN frame number; ignored")
                continue
            slot = masks.setdefault(m.group("video"), {}).setdefault(int(m.group("frame")), {})
            slot[role] = entry
        if not masks:
            raise FileNotFoundError(f"no brachial plexus masks under {native_dir}: expected "
                                    "data/<device>/ac_masks/<video>/<video>_NNN.jpg")
        for video_id in sorted(masks, key=natural_key):
            video = videos.get(video_id)
            if video is None:
                first = next(iter(next(iter(masks[video_id].values())).values()))
                writer.warn(first.path, f"masks of video {video_id!r} but no video file; "
                                        "skipped")
                continue
            _convert_video(video_id, video, masks[video_id], writer)


def _frames(video: TreeEntry, wanted: set[int]) -> dict[int, np.ndarray]:
    """Requested frames (``H x W x 3`` uint8 RGB) of a video on disk or inside an archive."""
    if video.file is not None:
        return {i: f for i, f in read_video(video.file, wanted)}
    # OpenCV decodes only files: spill an archived video to a temporary file, then remove it.
    fd, tmp = tempfile.mkstemp(suffix=video.suffix)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(video.read_bytes())
        return {i: f for i, f in read_video(tmp, wanted)}
    finally:
        os.unlink(tmp)


def _convert_video(video_id: str, video: TreeEntry, frames_masks: dict[int, dict[str, TreeEntry]],
                   writer: CocoWriter) -> None:
    wanted = set(frames_masks)
    try:
        frames = _frames(video, wanted)
    except (ValueError, OSError) as e:
        writer.warn(video.path, f"skipped: {e}")
        return
    missing = sorted(wanted - set(frames))
    if missing:
        writer.warn(video.path, f"{len(missing)} mask(s) name frames the video does not have "
                                f"(first: {missing[0]}); ignored")
    device = _device(video)
    for index in sorted(frames):
        frame = to_grey_if_uniform(frames[index])
        structures: dict[str, np.ndarray] = {}
        for role, entry in sorted(frames_masks[index].items()):
            try:
                mask = threshold(decode_mask_bytes(entry.read_bytes(), entry.path), 128)
            except (UnreadableFile, OSError) as e:
                writer.warn(entry.path, getattr(e, "reason", str(e)))
                continue
            if mask.shape != frame.shape[:2]:
                writer.warn(entry.path, f"mask size {mask.shape} differs from frame size "
                                        f"{frame.shape[:2]}; ignored")
                continue
            structures[role] = mask
        if not structures:
            continue
        writer.add_image(frame, structures, source=video.path, group=video_id, frame=index,
                         name_parts=(video_id,), extra={"device": device})


SOURCE = Source(spec=SPEC, convert=convert)
