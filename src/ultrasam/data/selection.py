"""How datasets pick samples: the split rule and dataset-name matching, shared by every reader."""

from __future__ import annotations

SPLITS = ("train", "val", "test")


def norm_name(name: str) -> str:
    """A dataset name for matching: lower case, letters and digits only (``BUS-BRA`` = ``busbra``)."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def check_split(split: str | None) -> None:
    """``ValueError`` unless ``split`` is one of :data:`SPLITS` or None."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")


def split_matches(value: str | None, wanted: str | None) -> bool:
    """The split rule: null (no official split) counts as train."""
    return wanted is None or value == wanted or (value is None and wanted == "train")
