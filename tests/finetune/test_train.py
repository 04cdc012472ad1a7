"""Each head and mode trains on a tiny synthetic task to a known-good accuracy; the loop
resumes exactly; the CLI writes a report; bad options fail with one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ultrasam.cli import main as cli_main
from ultrasam.data.coco import CocoWriter, write_json
from ultrasam.data.synthetic import make_phantom
from ultrasam.finetune import classify, segment
from ultrasam.finetune.encoder import EncoderAdapter, load_encoder
from ultrasam.finetune.loop import LoopConfig, fit
from ultrasam.modeling.build import build_model
from ultrasam.modeling.lora import LoRALinear

FAST = {"epochs": 30, "patience": 30, "lr": 1e-2, "n_boot": 100, "batch_size": 16}


def _check_cls(result: dict, threshold: float) -> None:
    m = result["test"]
    assert m["n"] >= 10
    assert m["balanced_accuracy"] >= threshold, result["history"]


@pytest.mark.parametrize("head", ["linear", "attention"])
def test_linear_probe_heads(class_folder: Path, tiny_fusion: Path, tmp_path: Path,
                            head: str) -> None:
    r = classify(class_folder, tmp_path, checkpoint=str(tiny_fusion), head=head,
                 **{**FAST, "lr": 1e-2 if head == "linear" else 3e-3})
    _check_cls(r, 0.7)
    assert 0 < r["trainable_parameters"] < 100_000
    assert (tmp_path / "state.pt").is_file()
    for f in ("metrics.json", "report.md", "plots/confusion.png", "plots/calibration.png",
              "plots/curve.png", "model.safetensors", "finetune.json"):
        assert (tmp_path / f).is_file(), f


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "partial"])
def test_fine_tune_modes(class_folder: Path, tiny_fusion: Path, tmp_path: Path,
                         mode: str) -> None:
    r = classify(class_folder, tmp_path, checkpoint=str(tiny_fusion), mode=mode,
                 encoder_lr=3e-3, **FAST)
    _check_cls(r, 0.7)


@pytest.mark.slow
def test_lora_on_vit(class_folder: Path, tiny_vit: Path, tmp_path: Path) -> None:
    r = classify(class_folder, tmp_path, checkpoint=str(tiny_vit), mode="lora",
                 encoder_lr=3e-3, balance="sampler", **FAST)
    _check_cls(r, 0.7)


def test_modes_freeze_what_they_say(tiny_fusion: Path, tiny_vit: Path) -> None:
    enc, _ = load_encoder(str(tiny_fusion))
    enc.set_mode("linear")
    assert not any(p.requires_grad for p in enc.parameters())
    enc.set_mode("partial", unfreeze=1)
    last = set(map(id, enc.units()[-1]))
    assert all(p.requires_grad == (id(p) in last) for p in enc.encoder_parameters())
    with pytest.raises(ValueError, match="LoRA needs a ViT"):
        enc.set_mode("lora")
    with pytest.raises(ValueError, match="unfreeze must be"):
        enc.set_mode("partial", unfreeze=99)
    vit, _ = load_encoder(str(tiny_vit))
    x = torch.rand(2, 3, 64, 64) * 255
    valid = torch.ones(2, 64, 64, dtype=torch.bool)
    before = vit(x, valid)[0]
    vit.set_mode("lora", lora_rank=2)
    wrapped = [m for m in vit.modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == 2  # tiny ViT: two blocks, one qkv each
    trainable = [n for n, p in vit.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    assert torch.allclose(vit(x, valid)[0], before, atol=1e-6)  # LoRA starts as identity


def test_random_init_is_seeded() -> None:
    a, name = load_encoder(variant="tiny", seed=1)
    b, _ = load_encoder(variant="tiny", seed=1)
    assert name == "tiny-random-init"
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="not both"):
        load_encoder("x", "tiny")
    assert isinstance(EncoderAdapter(build_model("small")).family, str)


# --------------------------------------------------------------------------- exact resume
class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3),
                                  nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _run(state: Path, resume: bool, crash_at: int | None = None) -> nn.Module:
    torch.manual_seed(0)
    net = _Net()
    data = torch.randn(20, 1, 8, 8)
    y = (data.mean(dim=(1, 2, 3)) > 0).long()
    calls = {"epoch": 0, "n": 0}

    def batch_loss(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        calls["n"] += 1
        if crash_at is not None and calls["n"] == crash_at:
            raise KeyboardInterrupt
        noise = torch.randn(len(idx), 1, 8, 8, generator=gen) * 0.1  # augmentation
        return nn.functional.cross_entropy(net(data[idx] + noise), y[idx])

    def val() -> float:
        return float(-nn.functional.cross_entropy(net(data), y))

    fit(net, [{"params": list(net.parameters()), "lr": 1e-2}], 20, batch_loss, val,
        LoopConfig(epochs=5, patience=5, batch_size=6, seed=0), state, resume=resume,
        sample_weights=np.linspace(1, 2, 20))
    return net


def test_resume_is_exact(tmp_path: Path) -> None:
    straight = _run(tmp_path / "a.pt", resume=False)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b.pt", resume=False, crash_at=9)  # during epoch 3 (3 batches/epoch)
    assert torch.load(tmp_path / "b.pt", weights_only=True)["epoch"] == 2
    resumed = _run(tmp_path / "b.pt", resume=True)
    for (k, v), w in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v, w), k


# ---------------------------------------------------------------------------- segmentation
@pytest.fixture(scope="module")
def phantom_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seg")
    w = CocoWriter("PH", ["cyst"], images_dir=root / "images")
    for seed in range(40):
        ph = make_phantom(seed=seed, size=64, geometry="linear", kind="cyst")
        w.add_image(ph.image, {"cyst": ph.masks["cyst"]}, source=f"c{seed}",
                    group=f"g{seed // 2}", spacing_mm=(0.2, 0.2))
    write_json(root / "annotations.coco.json", w.to_coco())
    return root


@pytest.mark.parametrize("mode", ["linear", pytest.param("full", marks=pytest.mark.slow)])
def test_segment_phantoms(phantom_corpus: Path, tiny_fusion: Path, tmp_path: Path,
                          mode: str) -> None:
    r = segment(phantom_corpus, tmp_path, checkpoint=str(tiny_fusion), mode=mode,
                **{**FAST, "encoder_lr": 3e-3, "epochs": 20})
    s = r["test"]["all"]
    assert s["n_instances"] >= 4
    assert s["dice"]["mean"] >= 0.6, r["history"]
    assert "hd95_mm" in s and s["hd95_mm"]["median"] is not None
    assert (tmp_path / "report.md").read_text().count("cyst") >= 1


def test_cli_classify_folder(class_folder: Path, tiny_fusion: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    rc = cli_main(["finetune", "classify", "--data", str(class_folder), "--out", str(out),
                   "--checkpoint", str(tiny_fusion), "--epochs", "2", "--max-images", "12"])
    assert rc == 0 and "report.md" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["epochs"] == 2 and m["n_images"]["test"] <= 12
    assert set(m["classes"]) == {"bright", "dark", "mid"}
    # resume of a finished run: nothing more to train, same result
    rc = cli_main(["finetune", "classify", "--data", str(class_folder), "--out", str(out),
                   "--checkpoint", str(tiny_fusion), "--epochs", "2", "--max-images", "12",
                   "--resume"])
    assert rc == 0
    assert json.loads((out / "metrics.json").read_text())["history"] == m["history"]


def test_cli_errors_are_one_line(class_folder: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli_main(["finetune", "segment", "--data", str(class_folder), "--out",
                   str(tmp_path), "--variant", "tiny"])
    assert rc == 1 and "segmentation needs masks" in capsys.readouterr().err
    rc = cli_main(["finetune", "classify", "--data", str(class_folder), "--out",
                   str(tmp_path), "--variant", "tiny", "--label-fraction", "2"])
    assert rc == 1 and "label_fraction" in capsys.readouterr().err
