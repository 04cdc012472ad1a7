"""Apply a saved fine-tuned model to new images (``ultrasam finetune predict``).

A run folder written by :func:`.api.classify` / :func:`.api.segment` holds ``finetune.json``
(task, classes or structures, the encoder's model config, the run's options) and
``model.safetensors`` (``encoder.*`` and ``head.*`` weights). :func:`load_finetuned` rebuilds
the same network (the encoder in the run's mode, LoRA layers included, and its head) and loads
the weights strictly; no code or pickle is read.

Each image goes through the training pipeline's steps: H x W x 3 uint8 RGB, longest side
resized to the encoder's frame S and zero-padded bottom/right, the padding masked out; in
linear-probe mode the frozen features are rounded to fp16 exactly as the head saw them in
training. Outputs:

- classification: the class probabilities (softmax) per image;
  :func:`predict_files` writes ``predictions.csv`` (file, predicted class, one column per class);
- segmentation: an H x W uint8 label map at the image's own size (0 background, k the k-th
  structure), from the logits cropped to the resized image and resized bilinearly back;
  :func:`predict_files` writes ``masks/<image stem>.png`` (pixel value = class index) and
  ``structures.json`` naming the values.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..data.decode import read_image, to_rgb
from ..inference.transforms import ResizeLongestSide
from ..modeling.build import build_model
from .config import FinetuneConfig
from .encoder import EncoderAdapter
from .heads import SegDecoder, build_classifier

TASKS = ("classification", "segmentation")


def as_rgb(image: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB from an H x W (gray) or H x W x 3 (RGB) uint8 array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError("images must be uint8 numpy arrays (H x W or H x W x 3 RGB)")
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 2:
        return to_rgb(image, "image")
    raise ValueError(f"image must be H x W or H x W x 3, got shape {image.shape}")


@dataclass
class FinetunedModel:
    """A loaded run: ``encoder`` + ``head`` in eval mode; ``classes`` (classification) or
    ``structures`` (segmentation, label value k = ``structures[k - 1]``)."""

    task: str
    encoder: EncoderAdapter
    head: nn.Module
    classes: list[str]
    structures: list[str]
    config: FinetuneConfig

    @property
    def img_size(self) -> int:
        return int(self.encoder.img_size)

    def _inputs(self, images: Sequence[np.ndarray]
                ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """uint8-valued B x 3 x S x S, valid B x S x S and the resized (h, w) of each."""
        if not images:
            raise ValueError("no images given")
        s = self.img_size
        resize = ResizeLongestSide(s)
        batch = torch.zeros(len(images), 3, s, s)
        valid = torch.zeros(len(images), s, s, dtype=torch.bool)
        sizes = []
        for b, image in enumerate(images):
            im = resize.apply_image(as_rgb(image))
            h, w = im.shape[:2]
            batch[b, :, :h, :w] = torch.from_numpy(np.ascontiguousarray(
                im.transpose(2, 0, 1))).float()
            valid[b, :h, :w] = True
            sizes.append((h, w))
        return batch, valid, sizes

    def logits(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Head logits of RGB uint8 images (B x K, or B x K x S x S) and the resized sizes."""
        batch, valid, sizes = self._inputs(images)
        dev = self.encoder.model.device
        with torch.no_grad():
            feats = self.encoder(batch.to(dev), valid.to(dev))
            if self.config.mode == "linear":
                feats = [f.half() for f in feats]  # what the linear probe trained on
            if isinstance(self.head, SegDecoder):
                out = self.head(feats, self.img_size)
            else:
                out = self.head(feats)
        return out.float().cpu(), sizes

    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Classification: B x K class probabilities (columns in ``classes`` order) of
        uint8 images (H x W gray or H x W x 3 RGB)."""
        if self.task != "classification":
            raise ValueError("predict_proba needs a classification run; this one segments")
        logits, _ = self.logits(images)
        return torch.softmax(logits, 1).numpy()

    def predict_masks(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Segmentation: one H x W uint8 label map per image, at the image's own size."""
        if self.task != "segmentation":
            raise ValueError("predict_masks needs a segmentation run; this one classifies")
        logits, sizes = self.logits(images)
        out = []
        for b, (image, (h, w)) in enumerate(zip(images, sizes)):
            full = F.interpolate(logits[b:b + 1, :, :h, :w], size=image.shape[:2],
                                 mode="bilinear", align_corners=False)
            out.append(full[0].argmax(0).numpy().astype(np.uint8))
        return out


def _read_meta(run: Path) -> dict[str, Any]:
    meta_path, weights = run / "finetune.json", run / "model.safetensors"
    missing = [p.name for p in (meta_path, weights) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{run}: not a fine-tuning run folder (missing {missing})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("task") not in TASKS:
        raise ValueError(f"{meta_path}: 'task' must be one of {list(TASKS)}")
    absent = [k for k in ("model_config", "finetune") if not isinstance(meta.get(k), dict)]
    if absent:
        raise ValueError(f"{meta_path}: missing object(s) {absent}")
    return meta


def load_finetuned(run_dir: str | Path, device: str | torch.device = "cpu") -> FinetunedModel:
    """Rebuild and load the fine-tuned network of ``run_dir`` (module docstring)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run = Path(run_dir)
    meta = _read_meta(run)
    known = set(FinetuneConfig.__dataclass_fields__)
    cfg = FinetuneConfig(**{k: v for k, v in meta["finetune"].items() if k in known})
    with torch.random.fork_rng():  # the random init is overwritten; keep the caller's RNG
        model = build_model(ModelConfig.from_dict(meta["model_config"]))
    encoder = EncoderAdapter(model)
    encoder.set_mode(cfg.mode, unfreeze=cfg.unfreeze, lora_rank=cfg.lora_rank)
    classes = [str(c) for c in meta.get("classes") or []]
    structures = [str(s) for s in meta.get("structures") or []]
    head: nn.Module
    if meta["task"] == "classification":
        if len(classes) < 2:
            raise ValueError(f"{run}/finetune.json: a classifier needs >= 2 classes")
        head = build_classifier(cfg.head, encoder.channels, len(classes), cfg.dropout)
    else:
        if not structures:
            raise ValueError(f"{run}/finetune.json: a segmenter needs its structures")
        head = SegDecoder(encoder.channels, len(structures) + 1, width=cfg.decoder_width)
    try:
        state = load_file(str(run / "model.safetensors"))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{run}/model.safetensors: unreadable ({e})") from None
    enc_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    head_state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    try:
        model.load_state_dict(enc_state, strict=True)
        head.load_state_dict(head_state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"{run}/model.safetensors does not match finetune.json: {first}") \
            from None
    encoder.to(device).eval()
    head.to(device).eval()
    return FinetunedModel(meta["task"], encoder, head, classes, structures, cfg)


def predict_files(run_dir: str | Path, images: Sequence[str | Path], out: str | Path,
                  batch_size: int = 8, device: str | torch.device = "cpu"
                  ) -> dict[str, Any]:
    """Apply the run in ``run_dir`` to image files and write the outputs into ``out``
    (module docstring); returns ``{"task", "n_images", "written": [paths]}``."""
    model = load_finetuned(run_dir, device)
    paths = [Path(p) for p in images]
    if not paths:
        raise ValueError("no images given")
    stems = [p.stem for p in paths]
    if model.task == "segmentation" and len(set(stems)) != len(stems):
        raise ValueError("two images share a file stem; their masks would overwrite each "
                         "other (predict them into separate --out folders)")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    rows: list[list[Any]] = []
    for s in range(0, len(paths), batch_size):
        chunk = paths[s:s + batch_size]
        imgs = [read_image(p) for p in chunk]
        if model.task == "classification":
            probs = model.predict_proba(imgs)
            for p, pr in zip(chunk, probs):
                rows.append([str(p), model.classes[int(np.argmax(pr))],
                             *[f"{float(v):.6f}" for v in pr]])
        else:
            import cv2

            (out_dir / "masks").mkdir(exist_ok=True)
            for p, mask in zip(chunk, model.predict_masks(imgs)):
                target = out_dir / "masks" / f"{p.stem}.png"
                cv2.imwrite(str(target), mask)
                written.append(str(target))
    if model.task == "classification":
        target = out_dir / "predictions.csv"
        with open(target, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["file", "predicted", *[f"p_{c}" for c in model.classes]])
            w.writerows(rows)
        written.append(str(target))
    else:
        legend = {"0": "background", **{str(k): s for k, s in
                                        enumerate(model.structures, start=1)}}
        target = out_dir / "structures.json"
        target.write_text(json.dumps(legend, indent=1) + "\n", encoding="utf-8")
        written.append(str(target))
    return {"task": model.task, "n_images": len(paths), "written": written}
