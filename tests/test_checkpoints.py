"""Checkpoint loading: formats, strictness, safety (restricted unpickling), native round trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ultrasam
from ultrasam.checkpoints import (CheckpointError, DefaultModelUnavailable, load_model,
                                  read_checkpoint, save_native)
from ultrasam.config import get_config
from ultrasam.convert import ConversionError, sam_to_ultrasam, ultrasam_to_sam
from ultrasam.modeling import build_model


def _randomised(variant: str = "tiny", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(variant)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.eval()


@pytest.fixture()
def tiny_state() -> dict[str, torch.Tensor]:
    return _randomised().state_dict()


def test_vit_b_has_meta_key_count() -> None:
    sd = build_model("vit_b").state_dict()
    assert len(sd) == 314
    assert len(sam_to_ultrasam(sd)) == 293


def test_ultrasam_mapping_round_trip(tiny_state: dict[str, torch.Tensor]) -> None:
    us = sam_to_ultrasam(tiny_state)
    assert "prompt_encoder.label_encoder.label_embedding.weight" in us
    assert us["prompt_encoder.label_encoder.label_embedding.weight"].shape[0] == 11
    back = ultrasam_to_sam(us)
    assert set(back) == set(tiny_state)
    for k, v in tiny_state.items():
        assert torch.equal(back[k], v), k


def test_ultrasam_unknown_key_is_listed(tiny_state: dict[str, torch.Tensor]) -> None:
    us = sam_to_ultrasam(tiny_state)
    us["backbone_extra.lora_A"] = torch.zeros(2)
    with pytest.raises(ConversionError, match="backbone_extra.lora_A"):
        ultrasam_to_sam(us)


@pytest.mark.parametrize("wrap", ["flat", "model", "module_prefix"])
def test_sam_containers_load(tmp_path: Path, tiny_state: dict[str, torch.Tensor],
                             wrap: str) -> None:
    obj: object = tiny_state
    if wrap == "model":
        obj = {"model": tiny_state, "epoch": 3}
    elif wrap == "module_prefix":
        obj = {f"module.{k}": v for k, v in tiny_state.items()}
    path = tmp_path / "sam_tiny.pth"
    torch.save(obj, path)
    model = load_model(path)
    assert model.checkpoint_format == "sam"
    assert model.config.variant == "tiny"
    assert not model.config.doubled_mlp_residual
    for k, v in model.state_dict().items():
        assert torch.equal(v, tiny_state[k])


def test_medsam_format_sets_preprocessing(tmp_path: Path, tiny_state, caplog) -> None:
    path = tmp_path / "weights.pth"
    torch.save(tiny_state, path)
    assert load_model(path, format="medsam").config.preprocessing == "medsam"
    assert load_model(path).config.preprocessing == "sam"
    named = tmp_path / "medsam_tiny.pth"
    torch.save(tiny_state, named)
    with caplog.at_level("WARNING"):
        m = load_model(named)
    assert m.config.preprocessing == "medsam" and "MedSAM" in caplog.text
    assert load_model(named, format="sam").config.preprocessing == "sam"


def test_ultrasam_container_with_framework_objects_loads(tmp_path: Path, tiny_state) -> None:
    # A class living in a fake "mmengine" module is pickled beside the weights, as in the
    # released UltraSam.pth; loading must not need (or run) mmengine.
    src = (
        "import sys, types, torch\n"
        "mod = types.ModuleType('mmengine.logging.message_hub')\n"
        "class MessageHub:\n"
        "    def __init__(self): self.log = {'loss': [1.0]}\n"
        "    def __reduce__(self): return (MessageHub, (), self.__dict__)\n"
        "MessageHub.__module__ = 'mmengine.logging.message_hub'\n"
        "mod.MessageHub = MessageHub\n"
        "sys.modules['mmengine'] = types.ModuleType('mmengine')\n"
        "sys.modules['mmengine.logging'] = types.ModuleType('mmengine.logging')\n"
        "sys.modules['mmengine.logging.message_hub'] = mod\n"
        "from ultrasam.convert import sam_to_ultrasam\n"
        "sd = torch.load(sys.argv[1])\n"
        "torch.save({'meta': {'epoch': 1}, 'state_dict': sam_to_ultrasam(sd),\n"
        "            'message_hub': MessageHub(), 'param_schedulers': []}, sys.argv[2])\n")
    sam_path, us_path = tmp_path / "sam.pth", tmp_path / "UltraSam.pth"
    torch.save(tiny_state, sam_path)
    subprocess.run([sys.executable, "-c", src, str(sam_path), str(us_path)], check=True)
    model = load_model(us_path)
    assert model.checkpoint_format == "ultrasam"
    assert model.config.doubled_mlp_residual
    assert all(layer.doubled_mlp_residual for layer in model.mask_decoder.transformer.layers)
    for k, v in model.state_dict().items():
        assert torch.equal(v, tiny_state[k])
    with pytest.raises(CheckpointError, match="UltraSam"):
        load_model(us_path, format="sam")


class _Payload:
    """Pickles to a call of os.system that would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_booby_trapped_pickle_is_refused_and_never_runs(tmp_path: Path, tiny_state) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": tiny_state, "hook": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"posix\.system|os\.system"):
        load_model(path)
    assert not marker.exists()
    # Same with a legacy (non-zip) pickle stream and with builtins.eval.
    class _Eval:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w')",))
    legacy = tmp_path / "legacy.pth"
    torch.save({"x": _Eval()}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"(builtins|__builtin__)\.eval"):
        load_model(legacy)
    assert not marker.exists()


def test_cli_info_refuses_unsafe_file(tmp_path: Path, tiny_state) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": tiny_state, "hook": _Payload(marker)}, path)
    r = subprocess.run([sys.executable, "-m", "ultrasam.cli", "info", str(path)],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "refused" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_strict_errors_list_every_offender(tmp_path: Path, tiny_state) -> None:
    state = dict(tiny_state)
    del state["mask_decoder.iou_token.weight"]
    state["mask_decoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    msg = str(info.value)
    assert "mask_decoder.iou_token.weight" in msg
    # Wrong shape in a key that the architecture inference does not read.
    state = dict(tiny_state)
    state["mask_decoder.iou_prediction_head.layers.2.bias"] = torch.zeros(7)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model(path)


def test_corrupt_and_wrong_files(tmp_path: Path, tiny_state) -> None:
    path = tmp_path / "model.pth"
    torch.save(tiny_state, path)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError):
        load_model(truncated)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError):
        load_model(text)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(CheckpointError, match="unrecognised key naming"):
        load_model(other)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unknown format"):
        load_model(path, format="onnx")


def test_native_round_trip_and_convert_cli(tmp_path: Path, tiny_state) -> None:
    src = tmp_path / "sam_tiny.pth"
    torch.save(tiny_state, src)
    dst = tmp_path / "native"
    r = subprocess.run([sys.executable, "-m", "ultrasam.cli", "convert", str(src), str(dst)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert {p.name for p in dst.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    assert "license: apache-2.0" in (dst / "README.md").read_text()
    model = load_model(dst)
    assert model.checkpoint_format == "native"
    for k, v in model.state_dict().items():
        assert torch.equal(v, tiny_state[k])
    r = subprocess.run([sys.executable, "-m", "ultrasam.cli", "info", str(dst), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and '"variant": "tiny"' in r.stdout


def test_native_records_ultrasam_switches(tmp_path: Path) -> None:
    model = _randomised()
    model.config = model.config.replace(doubled_mlp_residual=True, preprocessing="medsam")
    save_native(model, tmp_path / "n", source_format="ultrasam")
    loaded = load_model(tmp_path / "n")
    assert loaded.config.doubled_mlp_residual and loaded.config.preprocessing == "medsam"
    assert loaded.mask_decoder.transformer.layers[0].doubled_mlp_residual
    assert "cc-by-nc-sa-4.0" in (tmp_path / "n" / "README.md").read_text()


def test_native_fp16_weights_load(tmp_path: Path) -> None:
    model = _randomised()
    save_native(model, tmp_path / "h", dtype=torch.float16)
    loaded = load_model(tmp_path / "h")
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3), k


def test_default_model_error_is_clear() -> None:
    from ultrasam.checkpoints import DEFAULT_MODEL_DIR

    if (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
        assert load_model().config is not None
    else:
        with pytest.raises(DefaultModelUnavailable, match="no trained default model"):
            load_model()


def test_custom_config_is_inferred(tmp_path: Path) -> None:
    cfg = get_config("tiny", encoder_depth=3, encoder_global_attn_indexes=(0, 2))
    torch.manual_seed(1)
    model = build_model(cfg)
    path = tmp_path / "custom.pth"
    torch.save(model.state_dict(), path)
    state, config, fmt = read_checkpoint(path)
    assert config.encoder_depth == 3 and config.encoder_global_attn_indexes == (0, 2)
    assert ultrasam.load_model(path).config.encoder_depth == 3
