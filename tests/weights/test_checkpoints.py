"""Checkpoint loading: formats, strictness, safety (restricted unpickling), native round trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ultrasam
from ultrasam.config import get_config
from ultrasam.modeling import build_model
from ultrasam.weights.checkpoints import (
    CheckpointError,
    DefaultModelUnavailable,
    load_model,
    read_checkpoint,
    save_native,
)
from ultrasam.weights.convert import ConversionError, sam_to_ultrasam, ultrasam_to_sam


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
        "from ultrasam.weights.convert import sam_to_ultrasam\n"
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


def test_bundled_default_model_loads_exactly_what_the_folder_holds() -> None:
    """The bundled folder (tracked in git) loads strictly: its recorded sha256 is the file's,
    every tensor arrives unchanged, the variant and parameter count are the documented ones,
    and it segments a phantom lesion from a box (random or mismatched weights do not)."""
    import hashlib
    import json
    import re

    import cv2
    import numpy as np
    from safetensors.torch import load_file

    from ultrasam.data.synthetic import make_phantom
    from ultrasam.inference.predictor import Predictor
    from ultrasam.modeling import FusionNet
    from ultrasam.weights.checkpoints import DEFAULT_MODEL_DIR

    weights = DEFAULT_MODEL_DIR / "model.safetensors"
    meta = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == meta["weights_sha256"]
    model = load_model()
    assert isinstance(model, FusionNet) and model.checkpoint_format == "native"
    assert model.config.variant == meta["model"]["variant"] == "fusion"
    # Strict: the same keys, shapes and values (fp16 in the file, float32 in the model).
    stored = load_file(str(weights))
    state = model.state_dict()
    assert set(state) == set(stored)
    for key, value in state.items():
        assert torch.equal(value, stored[key].to(value.dtype)), key
    n_params = sum(p.numel() for p in model.parameters())
    # The fusion variant plus the global-context blocks the shipped weights were trained with.
    depth = meta["model"]["fusion_context_depth"]
    assert depth == 2
    assert n_params == sum(p.numel() for p in build_model(
        get_config("fusion", fusion_context_depth=depth)).parameters())
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    documented = re.search(r"([\d,]+) parameters", card)
    assert documented and int(documented.group(1).replace(",", "")) == n_params
    # A fixed input: the largest lesion of a seeded phantom, boxed as a user would.
    ph = make_phantom(seed=4, size=256, kind="cyst")
    gt = ph.masks[ph.structures[0]].astype(np.uint8)
    _, lab, stats, _ = cv2.connectedComponentsWithStats(gt)
    lesion = lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    ys, xs = np.nonzero(lesion)
    predictor = Predictor(model)
    predictor.set_image(ph.image)
    masks, _, _ = predictor.predict(box=[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1],
                                    multimask_output=False)
    dice = 2 * (masks[0] & lesion).sum() / (masks[0].sum() + lesion.sum())
    assert dice >= 0.8, dice


def test_default_model_error_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ultrasam.weights.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "DEFAULT_MODEL_DIR", tmp_path / "no_weights")
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


# ------------------------------------------------ meta-device construction, integrity, CLI
def _old_way(path: Path) -> torch.nn.Module:
    """How loading worked before: a randomly initialised CPU model, then load_state_dict."""
    state, config, _ = read_checkpoint(path)
    model = build_model(config)
    model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in state.items()})
    return model.eval()


@pytest.mark.parametrize("variant", ["sam", "tiny", "small", "fusion"])
def test_meta_device_load_predicts_like_the_old_load(tmp_path: Path, variant: str) -> None:
    """Weights assigned onto a meta-built model (pixel_mean/std computed, BatchNorm buffers
    loaded) give exactly the old outputs; "sam" is a SAM-format .pth, the others native."""
    import numpy as np

    from ultrasam import Predictor

    model = _randomised("tiny" if variant == "sam" else variant, seed=3)
    if variant == "fusion":  # non-trivial BatchNorm statistics
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                buf.normal_(0, 0.1)
    if variant == "sam":
        path = tmp_path / "sam_tiny.pth"
        torch.save(model.state_dict(), path)
    else:
        path = save_native(model, tmp_path / variant)
    new, old = load_model(path), _old_way(path)
    assert not any(t.is_meta for t in (*new.parameters(), *new.buffers()))
    assert torch.equal(new.pixel_mean, old.pixel_mean) and torch.equal(new.pixel_std,
                                                                       old.pixel_std)
    for (k, a), b in zip(new.state_dict().items(), old.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b), k
    image = np.random.default_rng(0).integers(0, 255, (70, 100, 3), dtype=np.uint8)
    answers = []
    for m in (new, old):
        p = Predictor(m)
        p.set_image(image)
        answers.append(p.predict(box=np.array([10, 10, 60, 50])))
    for a, b in zip(*answers):
        assert np.array_equal(a, b)


def test_native_records_and_verifies_sha256(tmp_path: Path, caplog) -> None:
    import hashlib
    import json

    from ultrasam.weights.checkpoints import checkpoint_info

    folder = save_native(_randomised(), tmp_path / "n", dtype=torch.float16)
    meta = json.loads((folder / "config.json").read_text())
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert meta["weights_sha256"] == digest
    assert checkpoint_info(folder).weights_sha256 == digest
    # A folder written before hashes were recorded still loads, with a debug note.
    del meta["weights_sha256"]
    (folder / "config.json").write_text(json.dumps(meta))
    with caplog.at_level("DEBUG", logger="ultrasam.weights.checkpoints"):
        load_model(folder)
    assert "no weights_sha256" in caplog.text
    # Overwritten bytes: refused when the hash is recorded.
    meta["weights_sha256"] = digest
    (folder / "config.json").write_text(json.dumps(meta))
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 .* does not match"):
        load_model(folder)


def test_non_finite_weights_are_refused_everywhere(tmp_path: Path, tiny_state) -> None:
    state = dict(tiny_state)
    state["mask_decoder.iou_token.weight"] = torch.full_like(
        state["mask_decoder.iou_token.weight"], float("inf"))
    torch.save(state, tmp_path / "inf.pth")
    with pytest.raises(CheckpointError, match="'mask_decoder.iou_token.weight' holds"):
        load_model(tmp_path / "inf.pth")
    model = _randomised()
    with torch.no_grad():
        model.mask_decoder.iou_token.weight.fill_(float("nan"))
    with pytest.raises(CheckpointError, match="non-finite"):
        save_native(model, tmp_path / "nan")


@pytest.mark.parametrize("change, match", [
    ({"encoder_depth": 200_000}, "encoder_depth=200000"),
    ({"img_size": 1 << 20}, "img_size"),
    ({"conv_depths": (1, 2, 3, 100_000)}, "conv_depths"),
    ({"conv_dims": (32, 80, 160, 1 << 20)}, "conv_dims"),
    ({"prompt_embed_dim": 63}, "prompt_embed_dim"),
    ({"fusion_context_depth": 1000}, "fusion_context_depth"),
    ({"conv_dims": (32, 80, 160, 252), "fusion_context_depth": 2}, "divisible by decoder_num"),
])
def test_config_bounds(change: dict, match: str) -> None:
    from ultrasam.weights.checkpoint_checks import check_config_bounds

    base = get_config("fusion" if any(k.startswith(("conv", "fusion")) for k in change)
                      else "vit_b")
    check_config_bounds(base, "x")
    with pytest.raises(CheckpointError, match=match):
        check_config_bounds(base.replace(**change), "x")


def test_cli_shows_one_line_for_project_errors_and_tracebacks_for_bugs(
        tmp_path: Path, monkeypatch, capsys) -> None:
    import ultrasam.weights.checkpoints as ckpt
    from ultrasam.cli import main

    path = tmp_path / "x.pth"
    path.write_text("not weights")
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ultrasam info: refused: ")

    def buggy(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(ckpt, "checkpoint_info", buggy)
    with pytest.raises(TypeError, match="a bug"):
        main(["info", str(path)])
