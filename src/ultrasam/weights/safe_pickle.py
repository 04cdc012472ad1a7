"""The pickle policy for foreign checkpoints: an exact allow-list, checked before anything loads.

A checkpoint's pickle is first *read* opcode by opcode (:func:`scan_pickle`, which executes
nothing) and refused unless:

- every opcode is one of the plain data opcodes PyTorch's ``weights_only`` unpickler handles
  (no ``STACK_GLOBAL``, ``INST``, ``OBJ``, ``EXT*``, ``POP``, protocol-4 framing, ...);
- every global is named *exactly* in :data:`TORCH_GLOBALS` (tensor rebuilding, storages,
  ``OrderedDict``, ``_codecs.encode``) or :data:`PLACEHOLDER_GLOBALS` — no module wildcards and
  no dotted attribute paths, and none of the allocating builtins PyTorch would otherwise admit
  (``bytearray``, ``set``, ``Counter``, ``complex``);
- it stays within fixed bounds: size, opcode count, stack height, nesting of marks, and bytes
  re-read from the memo (a large string fetched many times is a memory bomb).

Only then does ``torch.load(weights_only=True)`` run, with the placeholder names mapped through
``torch.serialization.safe_globals`` (:func:`torch_safe_globals`): the training frameworks'
classes (mmengine) and numpy's array machinery become :class:`Placeholder` objects that keep
their pickled state as plain data. None of their code runs, numpy and mmengine are not imported,
and numpy's ``_reconstruct`` does not allocate the array it names.

:data:`restricted_pickle_module` offers the same policy to ``torch.load(pickle_module=...)``.
"""

from __future__ import annotations

import codecs
import collections
import pickle
import pickletools
import types
from dataclasses import dataclass
from typing import IO, Any

from ..errors import UnsafeCheckpointError

# Storages a state dict may use (legacy typed-storage names, as torch.save writes them).
_STORAGES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte",
             "Bool")
# Resolved by torch's own unpickler to torch's own objects.
TORCH_GLOBALS: frozenset[str] = frozenset({
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    # Protocol 2 stores bytes (numpy array data) as _codecs.encode(str, "latin1").
    "_codecs.encode",
    *(f"torch.{s}Storage" for s in _STORAGES),
})
# Become inert placeholders: exactly the classes an mmengine (UltraSam) container pickles
# beside its weights, and numpy's array / scalar / dtype rebuilding used inside them.
PLACEHOLDER_GLOBALS: frozenset[str] = frozenset({
    "mmengine.logging.message_hub.MessageHub",
    "mmengine.logging.history_buffer.HistoryBuffer",
    "mmengine.config.config.ConfigDict",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
})
ALLOWED_GLOBALS: frozenset[str] = TORCH_GLOBALS | PLACEHOLDER_GLOBALS
# The opcodes torch's weights_only unpickler implements, minus nothing we need to refuse.
ALLOWED_OPCODES: frozenset[str] = frozenset({
    "PROTO", "STOP", "GLOBAL", "REDUCE", "NEWOBJ", "BUILD", "BINPERSID",
    "MARK", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT",
    "APPEND", "APPENDS", "SETITEM", "SETITEMS", "NONE", "NEWFALSE", "NEWTRUE",
    "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT", "BINUNICODE", "SHORT_BINSTRING",
    "BINGET", "LONG_BINGET", "BINPUT", "LONG_BINPUT",
})
_STRING_OPS = frozenset({"BINUNICODE", "SHORT_BINSTRING"})

# Bounds (a SAM ViT-H state dict pickles to ~60 kB, an mmengine container to a few hundred kB).
MAX_PICKLE_BYTES = 64 << 20
MAX_OPCODES = 4_000_000
MAX_STACK = 20_000  # the pickler batches 1000 dict items (2000 stack slots) per mark
MAX_MARK_DEPTH = 100
MAX_LONG_BYTES = 16  # LONG1: ints up to 2**127, enough for any size or count


@dataclass(frozen=True)
class PickleSummary:
    """What the scan saw: opcode count, globals used, deepest stack and mark nesting."""

    n_opcodes: int
    globals: frozenset[str]
    max_stack: int
    max_marks: int


def scan_pickle(data: bytes | IO[bytes], what: str = "pickle") -> PickleSummary:
    """Read one pickle's opcodes (nothing runs) and raise :class:`UnsafeCheckpointError` naming
    the first thing outside the policy; ``what`` names the pickle in messages."""
    n = height = max_height = max_marks = 0
    marks: list[int] = []
    seen: set[str] = set()
    memo_strings: dict[int, int] = {}  # memo index -> length of the string literal stored
    last_string: int | None = None
    refetched, budget = 0, None
    if isinstance(data, (bytes, bytearray)):
        if len(data) > MAX_PICKLE_BYTES:
            raise UnsafeCheckpointError(f"{what} is {len(data)} bytes (limit "
                                        f"{MAX_PICKLE_BYTES}): too large for weights")
        budget = max(len(data), 1 << 20)
    try:
        for op, arg, pos in pickletools.genops(data):
            n += 1
            name = op.name
            if n > MAX_OPCODES:
                raise UnsafeCheckpointError(f"{what} has more than {MAX_OPCODES} opcodes")
            if name not in ALLOWED_OPCODES:
                raise UnsafeCheckpointError(f"pickle opcode {name} (byte {pos} of {what}) is "
                                            "not allowed")
            if name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                full = f"{module}.{attr}"
                if full not in ALLOWED_GLOBALS:
                    raise UnsafeCheckpointError(f"pickle global {full!r} is not allowed")
                seen.add(full)
            elif name == "LONG1" and len(pickle.encode_long(int(arg))) > MAX_LONG_BYTES:
                raise UnsafeCheckpointError(f"{what}: integer of more than {MAX_LONG_BYTES} "
                                            "bytes")
            # Memo fan-out: a big string stored once and fetched many times (into
            # _codecs.encode, say) multiplies memory without growing the file.
            if name in ("BINPUT", "LONG_BINPUT"):
                if last_string is not None:
                    memo_strings[int(arg)] = last_string
                else:
                    memo_strings.pop(int(arg), None)
            elif name in ("BINGET", "LONG_BINGET"):
                refetched += memo_strings.get(int(arg), 0)
                if budget is not None and refetched > budget:
                    raise UnsafeCheckpointError(f"{what} re-reads {refetched} bytes of "
                                                "strings from its memo (fan-out bomb)")
            if name not in ("BINPUT", "LONG_BINPUT"):
                last_string = len(arg) if name in _STRING_OPS else None
            height = _stack_after(op, height, marks)
            max_height, max_marks = max(max_height, height), max(max_marks, len(marks))
            if height > MAX_STACK or len(marks) > MAX_MARK_DEPTH:
                raise UnsafeCheckpointError(f"{what} nests too deeply (stack {height}, "
                                            f"marks {len(marks)})")
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # truncated or malformed opcode stream
        raise UnsafeCheckpointError(f"{what} is not a well-formed pickle "
                                    f"({type(e).__name__}: {_first_line(e)})") from e
    if n == 0:
        raise UnsafeCheckpointError(f"{what} is empty")
    return PickleSummary(n, frozenset(seen), max_height, max_marks)


def _stack_after(op: pickletools.OpcodeInfo, height: int, marks: list[int]) -> int:
    """Stack height after ``op`` (the bookkeeping ``pickletools.dis`` does for validation)."""
    before, after = op.stack_before, op.stack_after
    if pickletools.markobject in before:
        if not marks:
            raise UnsafeCheckpointError(f"pickle opcode {op.name} without a mark")
        height = marks.pop() - before.index(pickletools.markobject)
    else:
        height -= len(before)
        if height < 0:
            raise UnsafeCheckpointError(f"pickle opcode {op.name} on an empty stack")
    if pickletools.markobject in after:
        marks.append(height)
        return height
    return height + len(after)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# --------------------------------------------------------------------------- placeholders
class Placeholder:
    """Stands in for a framework or numpy object: keeps its pickled arguments and state as
    plain data; runs none of the original code and allocates nothing the file merely names."""

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:  # noqa: PYI034
        obj = super().__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # accepts anything, does nothing
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def __reduce__(self) -> Any:
        raise TypeError(f"a placeholder for {self.qualified_name} cannot be pickled again")

    def __repr__(self) -> str:
        return f"<placeholder for {self.qualified_name}>"


PLACEHOLDERS: dict[str, type[Placeholder]] = {
    full: type(full.rsplit(".", 1)[1], (Placeholder,), {"qualified_name": full})
    for full in sorted(PLACEHOLDER_GLOBALS)}


def torch_safe_globals() -> list[tuple[type, str]]:
    """``(placeholder, exact name)`` pairs for ``torch.serialization.safe_globals``."""
    return [(cls, full) for full, cls in PLACEHOLDERS.items()]


# ------------------------------------------------------------- for torch.load(pickle_module=)
def _torch_global(full: str) -> Any:
    import torch

    if full == "collections.OrderedDict":
        return collections.OrderedDict
    if full == "_codecs.encode":
        return codecs.encode
    if full.startswith("torch._utils."):
        return getattr(torch._utils, full.rsplit(".", 1)[1])
    return getattr(torch, full.rsplit(".", 1)[1])  # one of the exact storage names


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` resolving only the exact names of the policy (nothing imported)."""

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full in PLACEHOLDERS:
            return PLACEHOLDERS[full]
        if full in TORCH_GLOBALS:
            return _torch_global(full)
        raise UnsafeCheckpointError(f"pickle global {full!r} is not allowed")


def load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


# A module-like object for ``torch.load(..., pickle_module=restricted_pickle_module)``.
restricted_pickle_module = types.SimpleNamespace(
    Unpickler=RestrictedUnpickler, load=load, __name__="ultrasam_restricted_pickle")

__all__ = [
    "ALLOWED_GLOBALS",
    "PLACEHOLDERS",
    "PickleSummary",
    "Placeholder",
    "UnsafeCheckpointError",
    "restricted_pickle_module",
    "scan_pickle",
    "torch_safe_globals",
]
