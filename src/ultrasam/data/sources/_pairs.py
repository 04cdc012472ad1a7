"""Image/mask pairing steps shared by the 2D converters.

Most 2D datasets ship an image and a mask per case and differ only in *how* the two are matched
(a key function) and what the mask values mean (label codes). The steps in between are the same
everywhere and live here, each written once:

* :func:`collect_pairs` groups :class:`~._tree.TreeEntry` objects by a layout-specific key into
  ``{key: {role: entry}}``; :func:`complete_pair` warns about an image without a mask (or the
  reverse) and returns the two entries otherwise.
* Reading a pair, with a warning (never a crash) for a file that cannot be decoded, comes in the
  three flavours the converters were written with, whose warnings name files differently and are
  kept as they are so that converted corpora stay identical:
  :func:`read_pair_bytes` (archive members decoded from memory), :func:`read_entry_pair` (entries
  read through :func:`._entry_io.read_entry_image`) and :func:`read_file_pair` (plain files under
  the native folder, with :func:`sizes_match` for the image/mask size check).
* :func:`matched_pairs` is the whole loop of the converters that find each image's mask file
  by a rule (same name in a sibling folder, a name pattern): claim the mask, read the pair with
  :func:`read_matched_pair`, and warn about the masks no image claimed (:func:`warn_orphans`).
* :func:`binary_foreground` turns a 0/1 or 0/255 mask into booleans and warns about other values.
* :func:`add_or_skip` adds an image and turns the writer's ``ValueError`` (size mismatch, bad
  layout) into a warning.

Array layouts: images ``H x W`` or ``H x W x 3`` uint8; masks as stored (``H x W`` or
``H x W x C``, the file's dtype) unless a function says it returns ``H x W`` bool.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np

from ..coco import CocoWriter
from ._entry_io import read_entry_image, read_entry_mask
from ._read import UnreadableFile, natural_sorted, read_image, read_mask, relative_source
from ._shapes import binary_mask_values, decode_image_bytes, decode_mask_bytes, format_unknown
from ._tree import TreeEntry
from ._volumes import read_nifti

__all__ = [
    "collect_pairs", "role_folder_key", "complete_pair", "LoadedPair", "load_pair",
    "read_pair_bytes", "read_nifti_entry", "read_entry_pair", "read_file_pair",
    "sizes_match", "binary_foreground", "label_structures", "add_or_skip", "read_matched_pair",
    "MatchedPair", "matched_pairs", "warn_orphans",
]

K = TypeVar("K", bound=Hashable)
#: role ("image", "mask", ...) -> the entry playing it.
Pair = dict[str, TreeEntry]


def collect_pairs(entries: Iterable[TreeEntry],
                  key: Callable[[TreeEntry], tuple[K, str] | None]) -> dict[K, Pair]:
    """Group ``entries`` by ``key(entry) -> (pair key, role)``; entries mapped to None are ignored.

    A later entry with the same key and role replaces an earlier one (entries come sorted by
    path, so the choice is deterministic).
    """
    pairs: dict[K, Pair] = {}
    for entry in entries:
        found = key(entry)
        if found is not None:
            pairs.setdefault(found[0], {})[found[1]] = entry
    return pairs


def complete_pair(image_entry: TreeEntry | None, mask_entry: TreeEntry | None,
                  writer: CocoWriter, mask_word: str = "mask"
                  ) -> tuple[TreeEntry, TreeEntry] | None:
    """Both entries, or None after warning ``"no matching <mask_word>"`` / ``"no matching
    image"`` on the one that is present (``mask_word``: what the dataset calls its masks)."""
    if image_entry is None or mask_entry is None:
        present = image_entry or mask_entry
        assert present is not None  # a pair holds at least the entry that created it
        writer.warn(present.path, "no matching " + (mask_word if mask_entry is None else "image"))
        return None
    return image_entry, mask_entry


def read_pair_bytes(image_entry: TreeEntry, mask_entry: TreeEntry, writer: CocoWriter
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """(image, mask as stored) decoded from the entries' bytes, or None after a warning.

    An undecodable file is named in the warning; an archive member that cannot even be read
    (``OSError``) is reported against the image, whose pair is skipped.
    """
    try:
        image = decode_image_bytes(image_entry.read_bytes(), image_entry.path)
        mask = decode_mask_bytes(mask_entry.read_bytes(), mask_entry.path)
    except (UnreadableFile, OSError) as e:
        writer.warn(str(getattr(e, "path", image_entry.path)), getattr(e, "reason", str(e)))
        return None
    return image, mask


class LoadedPair(NamedTuple):
    """A complete, decoded pair: the two entries, the image and the mask as stored."""

    image_entry: TreeEntry
    mask_entry: TreeEntry
    image: np.ndarray
    mask: np.ndarray


def load_pair(image_entry: TreeEntry | None, mask_entry: TreeEntry | None,
              writer: CocoWriter) -> LoadedPair | None:
    """:func:`complete_pair` then :func:`read_pair_bytes`: the decoded pair, or None after the
    warning either gives."""
    entries = complete_pair(image_entry, mask_entry, writer)
    if entries is None:
        return None
    decoded = read_pair_bytes(*entries, writer)
    if decoded is None:
        return None
    return LoadedPair(*entries, *decoded)


def role_folder_key(entry: TreeEntry, roles: Mapping[str, Sequence[str]]
                    ) -> tuple[tuple[str, ...], str] | None:
    """((path without the role folder, stem), role) for ``.../<role folder>/.../<stem>.<ext>``.

    ``roles``: role -> folder names (lower case) that mark it, tried in order; the folder
    nearest the file wins. Image and mask of a pair then share the key because only the role
    folder differs between their paths (``Images/a.png`` ~ ``Masks/a.png``). None when no role
    folder is in the path.
    """
    folders = [p.lower() for p in entry.parts[:-1]]
    for role, names in roles.items():
        for i in range(len(folders) - 1, -1, -1):
            if folders[i] in names:
                return tuple(entry.parts[:i]) + tuple(entry.parts[i + 1:-1]) + (entry.stem,), role
    return None


def read_nifti_entry(entry: TreeEntry, writer: CocoWriter) -> np.ndarray | None:
    """The slowest-axis-first array of a NIfTI entry (:func:`._volumes.read_nifti`), or None
    after warning ``"skipped: <reason>"`` on the entry."""
    try:
        return read_nifti(entry.read_bytes()).array
    except (ValueError, OSError) as e:
        writer.warn(entry.path, f"skipped: {e}")
        return None


def read_entry_pair(image_entry: TreeEntry, mask_entry: TreeEntry, writer: CocoWriter
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """(image, mask as stored) read with :mod:`._entry_io`, or None after warning the reason
    on the file that could not be read."""
    try:
        return read_entry_image(image_entry), read_entry_mask(mask_entry)
    except UnreadableFile as e:
        writer.warn(str(e.path), e.reason)
        return None


def read_file_pair(image_path: Path, mask_path: Path, native_dir: Path, writer: CocoWriter
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """(image, mask as stored) from files under ``native_dir``, or None after warning
    ``"<reason>; pair skipped"`` on the unreadable file (path relative to ``native_dir``)."""
    try:
        return read_image(image_path), read_mask(mask_path)
    except UnreadableFile as e:
        writer.warn(relative_source(e.path, native_dir), f"{e.reason}; pair skipped")
        return None


def read_matched_pair(image_path: Path, mask_path: Path | None, native_dir: Path,
                      writer: CocoWriter, check_size: bool = True, what: str = "mask"
                      ) -> tuple[np.ndarray, np.ndarray] | None:
    """An image and its mask file, or None after a warning naming the image: no mask file
    (``"no <what> file; image skipped"``), an unreadable file (:func:`read_file_pair`), or —
    with ``check_size`` — a mask whose size differs from the image's (:func:`sizes_match`).
    ``what``: what the dataset calls its masks (mask, annotation)."""
    source = relative_source(image_path, native_dir)
    if mask_path is None or not mask_path.is_file():
        writer.warn(source, f"no {what} file; image skipped")
        return None
    read = read_file_pair(image_path, mask_path, native_dir, writer)
    if read is None or (check_size and not sizes_match(*read, source, writer, what=what)):
        return None
    return read


class MatchedPair(NamedTuple):
    """One image of :func:`matched_pairs` with its mask: ``source`` is the image's path relative
    to the native folder (the name its record and warnings carry); arrays as stored."""

    image_path: Path
    source: str
    image: np.ndarray
    mask: np.ndarray


def matched_pairs(image_paths: Iterable[Path], mask_of: Callable[[Path], Path | None],
                  native_dir: Path, writer: CocoWriter, *, orphans: Iterable[Path] = (),
                  check_size: bool = True, what: str = "mask") -> Iterator[MatchedPair]:
    """The pairing loop of the folder-per-role converters, written once.

    For each image in order, its mask file ``mask_of(image)`` (None: none found) is claimed and
    the pair read by :func:`read_matched_pair` (a pair it rejects is skipped with its warning);
    once every image was yielded, the ``orphans`` candidates no image claimed are warned about
    (:func:`warn_orphans`). Warnings come in the order the loop met them, so a converter that
    consumes the whole iterator writes the same corpus as when it held the loop itself.
    """
    claimed: set[Path] = set()
    for image_path in image_paths:
        mask_path = mask_of(image_path)
        if mask_path is not None:
            claimed.add(mask_path)
        read = read_matched_pair(image_path, mask_path, native_dir, writer,
                                 check_size=check_size, what=what)
        if read is not None:
            yield MatchedPair(image_path, relative_source(image_path, native_dir), *read)
    warn_orphans(orphans, claimed, native_dir, writer, what=what)


def warn_orphans(candidates: Iterable[Path], claimed: set[Path], native_dir: Path,
                 writer: CocoWriter, what: str = "mask") -> int:
    """Warn ``"<what> without a matching image; skipped"`` on every candidate annotation file
    that no image claimed (a mask whose image is missing would otherwise vanish without a
    word); returns how many."""
    orphans = natural_sorted(p for p in candidates if p not in claimed)
    for path in orphans:
        writer.warn(relative_source(path, native_dir), f"{what} without a matching image; skipped")
    return len(orphans)


def sizes_match(image: np.ndarray, mask: np.ndarray, source: str, writer: CocoWriter,
                what: str = "mask") -> bool:
    """True when ``mask`` (``H x W[ x C]``) covers ``image``'s ``H x W``; else warn on ``source``
    that the pair is skipped (``what`` names the mask in the message: mask, annotation, label)."""
    if mask.shape[:2] == image.shape[:2]:
        return True
    writer.warn(source, f"image is {image.shape[:2]} but {what} is {mask.shape[:2]}; "
                        "pair skipped")
    return False


def binary_foreground(mask: np.ndarray, writer: CocoWriter, file: str,
                      structure: str) -> np.ndarray:
    """``H x W`` bool foreground of a 0/1 or 0/255 mask (see :func:`._shapes.binary_mask_values`).

    Other non-zero values are not foreground and are warned about on ``file``, naming the
    ``structure`` they would have been.
    """
    foreground, unknown = binary_mask_values(mask)
    if unknown:
        writer.warn(file, f"unexpected mask {format_unknown(unknown)}; "
                          f"only 1 and 255 are {structure}")
    return foreground


def label_structures(label: np.ndarray, labels: Mapping[int, str], writer: CocoWriter,
                     file: str) -> dict[str, np.ndarray]:
    """One ``H x W`` bool mask per structure of ``labels`` (pixel value -> structure; a mask is
    empty when its value is absent) from an ``H x W`` label map; non-zero values outside
    ``labels`` are warned about on ``file`` (``"unknown label values [...] ignored"``)."""
    unknown = sorted(set(np.unique(label).tolist()) - {0, *labels})
    if unknown:
        writer.warn(file, f"unknown label values {unknown} ignored")
    return {name: label == v for v, name in labels.items()}


def add_or_skip(writer: CocoWriter, image: np.ndarray, masks: dict[str, np.ndarray],
                warn_file: str, **fields: Any) -> None:
    """``writer.add_image(image, masks, **fields)``; a ``ValueError`` it raises (mask size,
    image layout) becomes the warning ``"skipped: <reason>"`` on ``warn_file``."""
    try:
        writer.add_image(image, masks, **fields)
    except ValueError as e:
        writer.warn(warn_file, f"skipped: {e}")
