"""Recognise and read ``torch.save`` files without running anything from them.

A file's kind is decided from its bytes, never its name: a ``torch.save`` zip archive is read;
TorchScript archives (whose loading runs code from the file), the legacy pre-1.6 stream (whose
loader allocates the storage sizes the pickle declares before checking them), other zips and
unknown bytes are refused before ``torch.load`` sees them. A zip is checked record by record
(exact names, stored uncompressed, one prefix, a bounded pickle), its pickle scanned by
:func:`ultrasam.weights.safe_pickle.scan_pickle`, then loaded with
``torch.load(weights_only=True)``; every tensor found must fit inside its storage (a zero-stride
view declaring a huge shape is refused before anything copies it).
"""

from __future__ import annotations

import re
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, UnsafeCheckpointError
from .safe_pickle import MAX_PICKLE_BYTES, Placeholder, scan_pickle, torch_safe_globals

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# torch.save's legacy stream starts with its magic number pickled with protocol 2.
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
# Records torch.save writes under its one top-level folder.
_RECORD = re.compile(r"(data\.pkl|data/\d+|byteorder|version|\.format_version|"
                     r"\.storage_alignment|\.data/version|\.data/serialization_id)")
_TORCHSCRIPT = re.compile(r"(constants\.pkl|code/.*|.*\.py|extra/.*|\.data/.*\.pkl)")
MAX_RECORDS = 1_000_000
MAX_DEPTH = 64  # nesting of containers in a loaded checkpoint (a state dict needs 2-4)
MAX_OBJECTS = 5_000_000
# torch.serialization.safe_globals changes process-wide state: one load at a time.
_LOAD_LOCK = threading.Lock()


def file_kind(path: Path) -> str:
    """'zip', 'legacy', 'safetensors' or 'unknown' from the first bytes of a file."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] in ZIP_MAGIC:
        return "zip"
    if head.startswith(LEGACY_MAGIC[:4]):
        return "legacy"
    if len(head) >= 10 and head[8:10] in (b'{"', b"{}"):
        return "safetensors"
    return "unknown"


def load_torch_file(path: str | Path) -> Any:
    """The object a ``torch.save`` zip holds, on the CPU, or :class:`CheckpointError` (one
    line first) saying why the file is refused."""
    path = Path(path)
    try:
        kind = file_kind(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from e
    if kind == "legacy":
        _refuse_legacy(path)
    if kind == "safetensors":
        raise CheckpointError(f"{path}: a safetensors file; load its folder (model.safetensors "
                              "+ config.json) instead")
    if kind != "zip":
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (unrecognised leading bytes)")
    try:
        scan_pickle(_check_zip(path), "data.pkl")
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from None
    try:
        with _LOAD_LOCK, torch.serialization.safe_globals(torch_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's refusals and corrupt bytes alike: one line
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                              f"({_first_line(e)})") from e
    try:
        check_loaded(obj)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from None
    return obj


def _check_zip(path: Path) -> bytes:
    """Validate a torch.save zip's records and return its pickle's bytes."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if len(infos) > MAX_RECORDS:
                raise UnsafeCheckpointError(f"{len(infos)} zip records")
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                raise UnsafeCheckpointError("duplicate zip records")
            prefixes = {n.split("/", 1)[0] for n in names}
            rests = [n.split("/", 1)[1] if "/" in n else "" for n in names]
            if any(_TORCHSCRIPT.fullmatch(r) for r in rests):
                raise UnsafeCheckpointError(
                    "a TorchScript archive (records such as code/ and "
                    "constants.pkl): loading it would run code from the file; export its "
                    "state_dict with torch.save instead")
            if len(prefixes) != 1 or "data.pkl" not in rests:
                raise UnsafeCheckpointError("a zip file but not a torch.save archive "
                                            "(no single <name>/data.pkl)")
            odd = sorted(n for n, r in zip(names, rests) if not _RECORD.fullmatch(r))
            if odd:
                raise UnsafeCheckpointError(f"unexpected zip record {odd[0]!r} in a "
                                            "torch.save archive")
            for info in infos:
                # torch.save stores records; a compressed one could inflate without bound.
                if info.compress_type != zipfile.ZIP_STORED or \
                        info.compress_size != info.file_size:
                    raise UnsafeCheckpointError("compressed zip record "
                                                f"{info.filename!r}")
            pkl = z.getinfo(f"{prefixes.pop()}/data.pkl")
            if pkl.file_size > MAX_PICKLE_BYTES:
                raise UnsafeCheckpointError(f"data.pkl is {pkl.file_size} bytes (limit "
                                            f"{MAX_PICKLE_BYTES})")
            return z.read(pkl)
    except UnsafeCheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            NotImplementedError, RuntimeError) as e:
        raise CheckpointError(f"{path}: damaged or truncated zip archive "
                              f"({_first_line(e)})") from e


def _refuse_legacy(path: Path) -> None:
    """Name an unsafe global when there is one (scanning only), then refuse the format."""
    try:
        with open(path, "rb") as f:
            for what in ("magic number", "protocol version", "system info", "object"):
                scan_pickle(f, f"legacy {what} pickle")
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from None
    raise UnsafeCheckpointError(
        f"{path}: legacy (pre-1.6, non-zip) torch.save format, whose loader allocates "
        "the storage sizes it declares before checking them; re-save it with a current "
        "torch.save")


def check_loaded(obj: Any) -> None:
    """Walk a loaded object (iteratively): bounded nesting, and every tensor within its
    storage (a zero or overlapping stride declaring more elements than stored is refused)."""
    for where, value, depth in _walk(obj):
        if depth > MAX_DEPTH:
            raise UnsafeCheckpointError(f"objects nested more than {MAX_DEPTH} deep")
        if isinstance(value, torch.Tensor):
            check_tensor_extent(value, where)


def check_tensor_extent(t: torch.Tensor, name: str) -> None:
    """Refuse a tensor that declares more bytes than its storage holds after its offset."""
    declared = t.numel() * t.element_size()
    held = t.untyped_storage().nbytes() - t.storage_offset() * t.element_size()
    if declared > max(held, 0):
        raise UnsafeCheckpointError(
            f"tensor {name!r} declares shape {tuple(t.shape)} "
            f"({declared} bytes) over a storage of {max(held, 0)} bytes (zero or overlapping "
            "strides)")


def _walk(obj: Any) -> Iterator[tuple[str, Any, int]]:
    """(path, value, depth) of every object reachable through containers and placeholders."""
    seen: set[int] = set()
    stack: list[tuple[str, Any, int]] = [("", obj, 0)]
    count = 0
    while stack:
        where, value, depth = stack.pop()
        count += 1
        if count > MAX_OBJECTS:
            raise UnsafeCheckpointError(f"more than {MAX_OBJECTS} objects")
        yield where, value, depth
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, dict):
            items: Any = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, Placeholder):
            items = ((f"{where}.{k}", v) for k, v in vars(value).items())
        else:
            continue
        stack.extend((w, v, depth + 1) for w, v in items)


def _first_line(e: BaseException) -> str:
    """The informative line of an exception (torch's weights_only errors open with a generic
    paragraph and name the cause after "WeightsUnpickler error:")."""
    text = str(e).strip()
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].strip()
    line = text.splitlines()[0].strip() if text else type(e).__name__
    return line[:300]
