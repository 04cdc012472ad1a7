"""Crafted checkpoints, one per attack class: refused (or defused) without side effects.

The corpus is written here at run time (small files, harmless payloads that would create a
marker file or import a marker module). ``attack_server.py`` runs each file in its own forked
process under an address-space cap, through both ``load_model`` and ``ultrasam info``; this
module checks what it reports: no marker, no module imported, bounded memory and time, a
:class:`CheckpointError` from the API and one line from the CLI naming the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from ultrasam.modeling import build_model
from ultrasam.weights.checkpoints import save_native
from ultrasam.weights.convert import sam_to_ultrasam

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures"
MAX_RSS_GROWTH_MIB = 400
MAX_SECONDS = 60

# name -> regex the one-line refusal must match, or None: the file must load (defused).
EXPECTED: dict[str, str | None] = {
    "reduce_os_system.pth": r"pickle global '(posix|os)\.system' is not allowed",
    "reduce_eval_legacy.pth": r"pickle global '(builtins|__builtin__)\.eval' is not allowed",
    "legacy_plain.pth": r"legacy \(pre-1\.6",
    "global_dotted_name.pth": r"pickle global 'torch\.serialization\.os\.system'",
    "stack_global_proto4.pth": r"opcode (STACK_GLOBAL|SHORT_BINUNICODE|FRAME)",
    "module_prefix_storage.pth": r"pickle global 'torchmarker\.EvilStorage' is not allowed",
    "bytearray_bomb.pth": r"pickle global 'builtins\.bytearray' is not allowed",
    "torchscript.pt": r"TorchScript archive",
    "layer_index_200000.pth": r"not contiguous",
    "zero_stride_pos_embed.pth": r"declares shape \(1, 8192, 8192, 48\)",
    "declared_storage_bomb.pth": r"record size",
    "deep_marks.pth": r"nests too deeply",
    "deep_tuples.pth": r"nested more than \d+ deep",
    "memo_fanout.pth": r"fan-out",
    "persistent_id_module.pth": r"persistent_load of storage",
    "persistent_id_int.pth": r"not a readable PyTorch checkpoint",
    "wrong_magic.pth": r"legacy|well-formed|empty",
    "text_file.pth": r"not a PyTorch checkpoint",
    "truncated_zip.pth": r"damaged or truncated zip",
    "compressed_record.pth": r"compressed zip record",
    "extra_record.pth": r"unexpected zip record",
    "nan_weights.pth": r"tensor '[^']+' holds \d+ non-finite values",
    "native_nan": r"tensor '[^']+' holds \d+ non-finite values",
    "native_corrupted": r"does not match the .* recorded in config.json",
    "native_depth_bomb": r"config out of bounds: encoder_depth=200000",
    "native_fusion_bomb": r"config out of bounds: conv_depths",
    "native_config_not_json": r"invalid config",
    "numpy_reconstruct_bomb.pth": None,  # the mm container loads; numpy allocates nothing
}


# ------------------------------------------------------------------------ pickle assembly
def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _int(i: int) -> bytes:
    if i < 2 ** 31:
        return b"J" + struct.pack("<i", i)
    data = i.to_bytes((i.bit_length() + 8) // 8, "little")
    return b"\x8a" + bytes([len(data)]) + data


def _tensor_pickle(numel: int, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """{'w': FloatStorage-backed tensor} with the given declared storage numel and view."""
    pid = b"(" + _str("storage") + _global("torch", "FloatStorage") + _str("0") + _str("cpu") \
        + _int(numel) + b"t"
    args = b"(" + pid + b"Q" + _int(0) + b"(" + b"".join(_int(s) for s in size) + b"t" \
        + b"(" + b"".join(_int(s) for s in stride) + b"t" + b"\x89" \
        + _global("collections", "OrderedDict") + b")R" + b"t"
    return b"\x80\x02}" + _str("w") + _global("torch._utils", "_rebuild_tensor_v2") + args \
        + b"Rs."


def _torch_zip(path: Path, pkl: bytes, records: dict[str, bytes] | None = None,
               compress: bool = False) -> None:
    """A zip laid out as torch.save writes it (stored records under one folder)."""
    kind = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", kind) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        for name, data in (records or {}).items():
            z.writestr(f"archive/{name}", data)


# ------------------------------------------------------------------------------ the corpus
class _Payload:
    """Pickles to a call of ``func(arg)`` (written, never run, by this test)."""

    def __init__(self, func: Any, arg: Any) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> Any:
        return (self.func, (self.arg,))


class _NumpyBomb:
    """Pickles as numpy's own array rebuild asking for 10**10 elements."""

    def __reduce__(self) -> Any:
        import numpy as np

        return (np._core.multiarray._reconstruct, (np.ndarray, (10 ** 10,), b"b"))


def _tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.state_dict()


def build_corpus(root: Path, markers: Path) -> Path:
    corpus, warm = root / "corpus", root / "warm"
    corpus.mkdir()
    warm.mkdir()
    state = _tiny_state()
    marker = markers / "pwned"
    shutil.copy(FIXTURES / "sam_tiny.pth", warm / "sam_tiny.pth")
    shutil.copy(FIXTURES / "ultrasam_tiny.pth", warm / "ultrasam_tiny.pth")
    model = build_model("tiny")
    model.load_state_dict(state)
    save_native(model, warm / "native_tiny")

    # Code execution through the pickle.
    torch.save({"state_dict": state, "hook": _Payload(os.system, f"touch {marker}")},
               corpus / "reduce_os_system.pth")
    torch.save({"x": _Payload(eval, f"open({str(marker)!r}, 'w')")},
               corpus / "reduce_eval_legacy.pth", _use_new_zipfile_serialization=False)
    torch.save(state, corpus / "legacy_plain.pth", _use_new_zipfile_serialization=False)
    _torch_zip(corpus / "global_dotted_name.pth", b"\x80\x02" + _global(
        "torch", "serialization.os.system") + _str(f"touch {marker}") + b"\x85R.")
    short = (lambda s: b"\x8c" + bytes([len(s)]) + s.encode())
    _torch_zip(corpus / "stack_global_proto4.pth", b"\x80\x04" + short("torch") + short(
        "serialization.os.system") + b"\x93" + short(f"touch {marker}") + b"\x85R.")
    # A module whose name merely starts with "torch" (and a class ending in Storage).
    _torch_zip(corpus / "module_prefix_storage.pth",
               b"\x80\x02" + _global("torchmarker", "EvilStorage") + b")R.")
    (markers.parent / "pymod").mkdir()
    (markers.parent / "pymod" / "torchmarker.py").write_text(
        f"open({str(markers / 'imported')!r}, 'w').close()\nclass EvilStorage: pass\n")
    # Allocating callables and declared sizes.
    _torch_zip(corpus / "bytearray_bomb.pth",
               b"\x80\x02" + _global("builtins", "bytearray") + _int(2 ** 31 - 1) + b"\x85R.")
    big = dict(state)
    big["image_encoder.blocks.200000.norm1.weight"] = torch.ones(48)
    torch.save(big, corpus / "layer_index_200000.pth")
    zero = dict(state)
    zero["image_encoder.pos_embed"] = torch.zeros(1, 1, 1, 48).expand(1, 8192, 8192, 48)
    torch.save(zero, corpus / "zero_stride_pos_embed.pth")
    _torch_zip(corpus / "declared_storage_bomb.pth", _tensor_pickle(10 ** 10, (4,), (1,)),
               {"data/0": b"\0" * 16})
    torch.save({"state_dict": sam_to_ultrasam(state), "message_hub": _NumpyBomb()},
               corpus / "numpy_reconstruct_bomb.pth")
    # Structure bombs.
    _torch_zip(corpus / "deep_marks.pth", b"\x80\x02" + b"(" * 5000 + b"N" + b"t" * 5000 + b".")
    _torch_zip(corpus / "deep_tuples.pth", b"\x80\x02N" + b"\x85" * 5_000 + b".")
    blob = "a" * (1 << 20)
    call = _global("_codecs", "encode") + b"h\x00" + _str("latin1") + b"\x86Ra"
    _torch_zip(corpus / "memo_fanout.pth",
               b"\x80\x02]" + _str(blob) + b"q\x00a" + call * 300 + b".")
    _torch_zip(corpus / "persistent_id_module.pth", b"\x80\x02" + _str("module") + b"\x85Q.")
    _torch_zip(corpus / "persistent_id_int.pth", b"\x80\x02K\x05Q.")
    # Archive kinds and damaged files.
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(scripted, str(corpus / "torchscript.pt"))
    (corpus / "wrong_magic.pth").write_bytes(b"\x80\x02\x8a\x0a" + bytes(range(10)) + b".")
    (corpus / "text_file.pth").write_text("hello, not weights\n")
    good = (FIXTURES / "sam_tiny.pth").read_bytes()
    (corpus / "truncated_zip.pth").write_bytes(good[: len(good) // 2])
    _torch_zip(corpus / "compressed_record.pth", _tensor_pickle(4, (4,), (1,)),
               {"data/0": b"\0" * 16}, compress=True)
    _torch_zip(corpus / "extra_record.pth", _tensor_pickle(4, (4,), (1,)),
               {"data/0": b"\0" * 16, "evil.bin": b"\0"})
    # Corrupted weights.
    nan = dict(state)
    nan["mask_decoder.iou_token.weight"] = torch.full_like(nan["mask_decoder.iou_token.weight"],
                                                           float("nan"))
    torch.save(nan, corpus / "nan_weights.pth")
    _native_variants(corpus, warm / "native_tiny", nan)
    return corpus


def _native_variants(corpus: Path, good: Path, nan_state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    from ultrasam.config import FUSION
    from ultrasam.weights.checkpoints import _sha256  # the hash save_native records

    def copy(name: str) -> Path:
        dst = corpus / name
        shutil.copytree(good, dst)
        return dst

    def config(folder: Path) -> dict[str, Any]:
        return json.loads((folder / "config.json").read_text())

    def write_config(folder: Path, meta: dict[str, Any]) -> None:
        (folder / "config.json").write_text(json.dumps(meta))

    folder = copy("native_nan")  # NaN weights with a matching hash: only finiteness catches it
    save_file({k: v.contiguous() for k, v in nan_state.items()},
              str(folder / "model.safetensors"))
    meta = config(folder)
    meta["weights_sha256"] = _sha256(folder / "model.safetensors")
    write_config(folder, meta)
    folder = copy("native_corrupted")  # bytes overwritten inside the file
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-64:-32] = b"\xff" * 32
    (folder / "model.safetensors").write_bytes(bytes(data))
    folder = copy("native_depth_bomb")
    meta = config(folder)
    meta["model"]["encoder_depth"] = 200_000
    write_config(folder, meta)
    folder = copy("native_fusion_bomb")
    meta = config(folder)
    meta["model"] = FUSION.replace(conv_depths=(1, 2, 3, 100_000)).to_dict()
    write_config(folder, meta)
    folder = copy("native_config_not_json")
    (folder / "config.json").write_text("[" * 100_000)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("attacks")
    markers = root / "markers"
    markers.mkdir()
    corpus = build_corpus(root, markers)
    assert sorted(p.name for p in corpus.iterdir()) == sorted(EXPECTED)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(root / "pymod"), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(HERE / "attack_server.py"), str(corpus),
                        str(markers)], capture_output=True, text=True, env=env, timeout=1800,
                       check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    out = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return {rep["name"]: rep for rep in out}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_crafted_file(reports: dict[str, dict[str, Any]], name: str) -> None:
    rep = reports[name]
    assert "crash" not in rep, rep
    assert rep["markers"] == [], f"{name}: side effect {rep['markers']}"
    assert rep["new_modules"] == [], f"{name}: imported {rep['new_modules']}"
    assert rep["rss_growth_mib"] < MAX_RSS_GROWTH_MIB, rep
    assert rep["seconds"] < MAX_SECONDS, rep
    assert "info_exception" not in rep, rep
    expected = EXPECTED[name]
    if expected is None:
        assert rep["load"]["ok"], rep
        assert rep["info"]["rc"] == 0, rep
        return
    assert not rep["load"]["ok"] and "CheckpointError" in rep["load"]["mro"], rep
    assert re.search(expected, rep["load"]["message"].splitlines()[0]), rep["load"]
    lines = rep["info"]["stderr"].strip().splitlines()
    assert rep["info"]["rc"] == 1 and len(lines) == 1, rep["info"]
    assert lines[0].startswith("ultrasam info: refused: ") and re.search(expected, lines[0]), \
        lines[0]
