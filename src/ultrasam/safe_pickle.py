"""A restricted unpickler for foreign checkpoint containers (never runs code from a file).

Policy, explicit and small:
- rebuilt: tensors and storages (torch's own rebuild functions), plain containers
  (``collections.OrderedDict``), ``torch.Size``/``torch.device``/dtypes, and numpy arrays,
  scalars and dtypes (data, not code);
- inert placeholders: classes from the training frameworks' own modules (``mmengine``,
  ``mmcv``, ``mmdet``, ``mmpretrain``) — their state is kept as plain data and none of their code
  runs (the frameworks need not even be installed);
- refused: every other global (``os.system``, ``subprocess.Popen``, ``builtins.eval``,
  ``builtins.getattr``, ...): loading fails with :class:`UnsafeCheckpointError` naming it.
"""

from __future__ import annotations

import pickle
import types
from typing import Any

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Tensor"),
    ("torch.nn.parameter", "Parameter"),
    # Protocol-2 pickles (torch.save's default) store numpy bytes via _codecs.encode, which
    # only turns a str into bytes.
    ("_codecs", "encode"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch", "float32"), ("torch", "float16"), ("torch", "bfloat16"), ("torch", "float64"),
    ("torch", "int64"), ("torch", "int32"), ("torch", "uint8"), ("torch", "bool"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
})
# numpy >= 1.25 pickles dtypes as numpy.dtypes.<Name>DType classes.
ALLOWED_MODULES: frozenset[str] = frozenset({"numpy.dtypes"})
FRAMEWORK_PREFIXES: tuple[str, ...] = ("mmengine", "mmcv", "mmdet", "mmpretrain")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file asks to import a global outside the policy; nothing from it was run."""


class FrameworkPlaceholder:
    """Stands in for a training-framework object: holds its pickled state as plain data."""

    _qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> FrameworkPlaceholder:
        obj = super().__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # accepts anything, does nothing
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<placeholder for {self._qualified_name}>"


_placeholder_cache: dict[str, type] = {}


def _placeholder(module: str, name: str) -> type:
    qualified = f"{module}.{name}"
    if qualified not in _placeholder_cache:
        _placeholder_cache[qualified] = type(name, (FrameworkPlaceholder,),
                                             {"_qualified_name": qualified})
    return _placeholder_cache[qualified]


def _is_framework(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in FRAMEWORK_PREFIXES)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` enforces the module policy above."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS or module in ALLOWED_MODULES:
            return super().find_class(module, name)
        if module.startswith("torch") and name.endswith("Storage"):
            return super().find_class(module, name)
        if _is_framework(module):
            return _placeholder(module, name)
        raise UnsafeCheckpointError(
            f"refused to load global {module}.{name}: not a tensor, storage or plain "
            "container (this file may try to run code when unpickled)")


def load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


# A module-like object for ``torch.load(..., pickle_module=restricted_pickle_module)``.
restricted_pickle_module = types.SimpleNamespace(
    Unpickler=RestrictedUnpickler, load=load, __name__="ultrasam_restricted_pickle")
