"""``classify`` and ``segment``: one call from a labelled corpus or folder to a fine-tuned model
and its report (what ``ultrasam finetune classify|segment`` runs).

Steps of both:

1. read the records (:mod:`.data`), keep the usable ones (a label for classification), split
   them group-aware (:mod:`.splits`), thin the training groups to ``label_fraction`` and every
   split to ``max_images`` when asked;
2. load the encoder (checkpoint or random init of a variant) and set its mode; build the head;
3. resize the images once into the encoder's S x S frame (uint8 in memory); in ``linear``
   mode compute the frozen features once, so each epoch trains only the head;
4. train with :func:`.loop.fit` (early stopping on validation, exact resume from
   ``OUT/state.pt``);
5. evaluate the best weights on the test split and write ``metrics.json``, ``report.md``,
   ``plots/`` and the weights (``model.safetensors`` + ``finetune.json``) into ``OUT``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..evaluate.metrics import aggregate, instance_scores
from ..train.fusion_augment import AugmentConfig, augment
from . import report
from .cache import RunCache, fingerprint, frozen_features
from .cls_metrics import classification_report, point_metrics
from .config import FinetuneConfig
from .data import ImageSource, Record, Tensors, load_tensors, open_source
from .encoder import EncoderAdapter, load_encoder
from .heads import SegDecoder, build_classifier
from .loop import FitResult, LoopConfig, fit
from .splits import label_fraction, split_records

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
IGNORE = 255  # label-map value of padding pixels (no loss there)


# ------------------------------------------------------------------------------ shared steps
def plan_splits(records: Sequence[Record], cfg: FinetuneConfig) -> dict[str, list[int]]:
    """Record indices per split (step 1 of the module docstring)."""
    fr = dict(zip(SPLIT_NAMES, cfg.fractions))
    assigned = split_records(records, seed=cfg.seed, fractions=fr)
    out = {s: [i for i, a in enumerate(assigned) if a == s] for s in SPLIT_NAMES}
    # The cap first, then the label fraction of the capped training set: smaller fractions
    # are subsets of larger ones (a nested label-efficiency curve; cached features reused).
    if cfg.max_images is not None:
        for s in SPLIT_NAMES:
            if len(out[s]) > cfg.max_images:
                out[s] = label_fraction(records, out[s], cfg.max_images / len(out[s]),
                                        cfg.seed + 1)
    out["train"] = label_fraction(records, out["train"], cfg.label_fraction, cfg.seed)
    empty = [s for s in SPLIT_NAMES if not out[s]]
    if empty:
        raise ValueError(f"no images in split(s) {empty}; "
                         f"sizes {({s: len(v) for s, v in out.items()})}")
    return out


class EncoderWithHead(nn.Module):
    """Encoder and head as one trainable network; input uint8-valued B x 3 x S x S images and
    their valid-pixel masks B x S x S."""

    def __init__(self, encoder: EncoderAdapter, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, images: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(images, valid)
        if isinstance(self.head, SegDecoder):
            return self.head(feats, images.shape[-1])
        return self.head(feats)


@dataclass
class _Run:
    """What both tasks share once the data and the network are ready."""

    cfg: FinetuneConfig
    encoder: EncoderAdapter
    encoder_name: str
    head: nn.Module
    tensors: dict[str, Tensors]
    features: dict[str, list[torch.Tensor]] | None  # linear mode: frozen features per split

    @property
    def net(self) -> nn.Module:
        return self.head if self.features is not None else EncoderWithHead(self.encoder,
                                                                            self.head)


def _prepare(source: ImageSource, records: list[Record], splits: dict[str, list[int]],
             cfg: FinetuneConfig, make_head: Callable[[EncoderAdapter], nn.Module],
             classes: Sequence[str] | None, cache: RunCache | None = None) -> _Run:
    """Steps 2-3 of the module docstring; ``cache`` reuses resized images and frozen
    features of earlier runs in this process (:mod:`.cache`)."""
    encoder, name = load_encoder(cfg.checkpoint, cfg.variant, cfg.device, cfg.seed)
    encoder.set_mode(cfg.mode, unfreeze=cfg.unfreeze, lora_rank=cfg.lora_rank)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        head = make_head(encoder).to(cfg.device)
    rows = {s: [records[i].index for i in idx] for s, idx in splits.items()}
    if cache is None:
        tensors = {s: load_tensors(source, r, encoder.img_size, classes)
                   for s, r in rows.items()}
    else:
        tensors = {s: cache.tensors(source, r, encoder.img_size, classes)
                   for s, r in rows.items()}
    features = None
    if cfg.mode == "linear":
        if cache is None:
            features = {s: frozen_features(encoder, t.images, t.valid())
                        for s, t in tensors.items()}
        else:
            key = fingerprint(encoder)
            features = {s: cache.features(encoder, key, source, rows[s], t)
                        for s, t in tensors.items()}
    return _Run(cfg, encoder, name, head, tensors, features)


def _augmented(run: _Run, split: str, idx: torch.Tensor, gen: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Images, valid masks and label maps of training items ``idx``, augmented when asked.

    A multi-class label map goes through the binary-mask augmentation once per class with the
    generator rewound each time, so every class gets the same warp as the image.
    """
    t = run.tensors[split]
    images, valid = t.images[idx].float(), t.valid()[idx]
    targets = t.targets[idx].long() if t.targets is not None else None
    if not run.cfg.augment:
        return images, valid, targets
    acfg = AugmentConfig()
    state = gen.get_state()
    empty = torch.zeros_like(valid)
    out_images, _, out_valid = augment(images, empty, valid, acfg, gen)
    if targets is not None:
        after = gen.get_state()
        new = torch.zeros_like(targets)
        for k in [int(v) for v in torch.unique(targets) if 0 < int(v) < IGNORE]:
            gen.set_state(state)
            _, mask_k, _ = augment(images, targets == k, valid, acfg, gen)
            new[mask_k] = k
        gen.set_state(after)
        targets = new
    return out_images, out_valid, targets


def _forward(run: _Run, split: str, idx: torch.Tensor, images: torch.Tensor | None = None,
             valid: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of items ``idx`` of ``split`` (cached features in linear mode)."""
    dev = run.cfg.device
    if run.features is not None:
        feats = [f[idx].to(dev) for f in run.features[split]]
        if isinstance(run.head, SegDecoder):
            return run.head(feats, run.encoder.img_size)
        return run.head(feats)
    t = run.tensors[split]
    if images is None or valid is None:
        images, valid = t.images[idx].float(), t.valid()[idx]
    return run.net(images.to(dev), valid.to(dev))


def _predict(run: _Run, split: str, batch: int) -> torch.Tensor:
    """Logits of every item of a split (eval mode, no gradients), on the CPU."""
    run.net.eval()
    n = len(run.tensors[split].images)
    outs = []
    with torch.no_grad():
        for s in range(0, n, batch):
            outs.append(_forward(run, split, torch.arange(s, min(n, s + batch))).float().cpu())
    return torch.cat(outs)


def _train(run: _Run, out: Path, resume: bool,
           loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor],
                             torch.Tensor],
           val_score: Callable[[], float], sample_weights: np.ndarray | None) -> FitResult:
    """Step 4: parameter groups (head at ``lr``, encoder at ``encoder_lr``) and the loop;
    ``loss_fn(logits, indices, label maps or None, valid masks)``."""
    cfg = run.cfg
    net = run.net
    groups = [{"params": list(run.head.parameters()), "lr": cfg.lr}]
    if run.features is None:
        enc = [p for p in run.encoder.parameters() if p.requires_grad]
        groups.append({"params": enc, "lr": cfg.encoder_lr})
    labels = run.tensors["train"]

    def batch_loss(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if run.features is not None:
            logits = _forward(run, "train", idx)
            targets = labels.targets[idx].long() if labels.targets is not None else None
            valid = labels.valid()[idx]
        else:
            images, valid, targets = _augmented(run, "train", idx, gen)
            logits = _forward(run, "train", idx, images, valid)
        return loss_fn(logits, idx, targets, valid)

    loop = LoopConfig(epochs=cfg.epochs, patience=cfg.patience, batch_size=cfg.batch_size,
                      weight_decay=cfg.weight_decay, seed=cfg.seed, max_seconds=cfg.max_seconds)
    return fit(net, groups, len(labels.images), batch_loss, val_score, loop,
               state_path=out / "state.pt", resume=resume, sample_weights=sample_weights)


def _save_model(run: _Run, out: Path, meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    state = {f"encoder.{k}": v for k, v in run.encoder.model.state_dict().items()}
    state.update({f"head.{k}": v for k, v in run.head.state_dict().items()})
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
              str(out / "model.safetensors"))
    (out / "finetune.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n",
                                       encoding="utf-8")


def _result(run: _Run, task: str, data: Any, splits: dict[str, list[int]], fitres: FitResult
            ) -> dict[str, Any]:
    cfg = run.cfg
    trainable = sum(p.numel() for p in run.net.parameters() if p.requires_grad)
    if run.features is not None:
        trainable = sum(p.numel() for p in run.head.parameters())
    where = data.description if isinstance(data, ImageSource) else str(data)
    return {"task": task, "data": where, "encoder": run.encoder_name,
            "encoder_family": run.encoder.family, "mode": cfg.mode,
            "head": cfg.head if task == "classification" else "fpn-decoder",
            "label_fraction": cfg.label_fraction,
            "n_images": {s: len(v) for s, v in splits.items()},
            "trainable_parameters": int(trainable), "history": fitres.history,
            "best_epoch": fitres.best_epoch, "best_val_score": fitres.best_score,
            "stopped": fitres.stopped, "train_seconds": fitres.seconds,
            "config": cfg.to_dict()}


def _source(data: Any, cfg: FinetuneConfig) -> ImageSource:
    """An already opened source (several runs on one corpus parse it once) or a path."""
    if isinstance(data, ImageSource):
        return data
    return open_source(data, cfg.datasets, cfg.label_field)


def _config(config: FinetuneConfig | None, overrides: dict[str, Any]) -> FinetuneConfig:
    cfg = config or FinetuneConfig()
    return cfg.replace(**overrides) if overrides else cfg


# ---------------------------------------------------------------------------- classification
def classify(data: str | Path | Sequence[str | Path] | ImageSource, out: str | Path,
             config: FinetuneConfig | None = None, resume: bool = False,
             cache: RunCache | None = None, **overrides: Any) -> dict[str, Any]:
    """Fine-tune an image classifier on ``data`` (a COCO corpus with an image-level label
    field, or a folder per class, or an :class:`ImageSource` already opened) and write its
    report into ``out``; returns the result dict (also ``out/metrics.json``). ``cache``: a
    :class:`RunCache` shared by several runs (images and frozen features computed once).
    ``overrides``: any :class:`FinetuneConfig` field."""
    cfg = _config(config, overrides)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = _source(data, cfg)
    records = [r for r in source.records if r.label is not None]
    classes = sorted({r.label for r in records if r.label is not None})
    if len(classes) < 2:
        raise ValueError(f"{source.description}: need images of at least 2 classes in field "
                         f"{cfg.label_field!r}, found {classes}")
    splits = plan_splits(records, cfg)
    code = {c: k for k, c in enumerate(classes)}
    y = {s: torch.tensor([code[records[i].label] for i in idx])  # type: ignore[index]
         for s, idx in splits.items()}
    counts = Counter(y["train"].tolist())
    missing = [classes[k] for k in range(len(classes)) if counts[k] == 0]
    if missing:
        raise ValueError(f"classes {missing} have no training image; lower the validation / "
                         f"test fractions or raise label_fraction")
    run = _prepare(source, records, splits, cfg,
                   lambda enc: build_classifier(cfg.head, enc.channels, len(classes),
                                                cfg.dropout), None, cache)
    n_train = len(y["train"])
    freq = torch.tensor([counts[k] for k in range(len(classes))], dtype=torch.float)
    weight = n_train / (len(classes) * freq) if cfg.balance == "loss" else None
    sampler = (1.0 / freq[y["train"]]).numpy() if cfg.balance == "sampler" else None

    def loss_fn(logits: torch.Tensor, idx: torch.Tensor, _t: torch.Tensor | None,
                _v: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y["train"][idx].to(logits.device),
                               weight=None if weight is None else weight.to(logits.device))

    def val_score() -> float:
        logits = _predict(run, "val", cfg.batch_size)
        m = point_metrics(y["val"].numpy(), torch.softmax(logits, 1).numpy())
        # Balanced accuracy, ties broken by the (unweighted) validation loss.
        return m["balanced_accuracy"] - 1e-3 * float(F.cross_entropy(logits, y["val"]))

    fitres = _train(run, out_dir, resume, loss_fn, val_score, sampler)
    probs = torch.softmax(_predict(run, "test", cfg.batch_size), 1).numpy()
    result = _result(run, "classification", data, splits, fitres)
    result["classes"] = classes
    result["class_counts"] = {s: {classes[k]: int((v == k).sum()) for k in range(len(classes))}
                              for s, v in y.items()}
    result["test"] = classification_report(y["test"].numpy(), probs, n_boot=cfg.n_boot,
                                           seed=cfg.seed)
    result["test_predictions"] = [
        {"dataset": records[i].dataset, "image_id": records[i].image_id,
         "source": records[i].source, "label": records[i].label,
         "probs": [round(float(p), 5) for p in pr]}
        for i, pr in zip(splits["test"], probs)]
    _save_model(run, out_dir, {"task": "classification", "classes": classes,
                               "encoder": run.encoder_name,
                               "model_config": run.encoder.model.config.to_dict(),
                               "finetune": cfg.to_dict()})
    return report.write_classification_report(out_dir, result)


# ------------------------------------------------------------------------------ segmentation
def dice_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes; logits B x K x S x S, targets B x S x S
    (class index), valid B x S x S bool (padding excluded)."""
    k = logits.shape[1]
    prob = torch.softmax(logits, 1)[:, 1:] * valid[:, None]
    onehot = F.one_hot(targets.clamp(max=k - 1), k).permute(0, 3, 1, 2)[:, 1:].float()
    onehot = onehot * valid[:, None]
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    return 1.0 - ((2 * inter + 1.0) / (denom + 1.0)).mean()


def _val_dice(pred: torch.Tensor, t: Tensors, n_classes: int) -> float:
    """Mean per-image, per-present-class Dice in the model frame (validation only)."""
    targets, valid = t.targets, t.valid()
    assert targets is not None
    scores = []
    for b in range(len(pred)):
        for k in range(1, n_classes):
            g = (targets[b] == k) & valid[b]
            if not g.any():
                continue
            p = (pred[b] == k) & valid[b]
            scores.append(2.0 * float((p & g).sum()) / float(p.sum() + g.sum()))
    return float(np.mean(scores)) if scores else 0.0


def _seg_records(run: _Run, source: ImageSource, records: list[Record], idx: Sequence[int],
                 logits: torch.Tensor, classes: Sequence[str]) -> list[dict[str, Any]]:
    """Per test image and structure present in its ground truth: Dice, IoU, HD95 at the
    image's stored size (logits cropped to the resized image, bilinear back to full size)."""
    out = []
    t = run.tensors["test"]
    for row, i in enumerate(idx):
        data = source.read(records[i].index)
        h, w = (int(v) for v in t.sizes[row])
        full = F.interpolate(logits[row:row + 1, :, :h, :w], size=data.image.shape[:2],
                             mode="bilinear", align_corners=False)
        pred = full[0].argmax(0).numpy()
        for k, name in enumerate(classes, start=1):
            gt = np.zeros(data.image.shape[:2], bool)
            for m, s in zip(data.masks, data.structures):
                if s == name:
                    gt |= m
            if not gt.any():
                continue
            sc = instance_scores(pred == k, gt, data.spacing_mm)
            out.append({"dataset": records[i].dataset, "structure": name,
                        "image_id": records[i].image_id, "dice": sc.dice, "iou": sc.iou,
                        "hd95_px": sc.hd95_px, "hd95_mm": sc.hd95_mm})
    return out


def segment(data: str | Path | Sequence[str | Path] | ImageSource, out: str | Path,
            config: FinetuneConfig | None = None, resume: bool = False,
            cache: RunCache | None = None, **overrides: Any) -> dict[str, Any]:
    """Fine-tune a prompt-free segmenter (encoder + light FPN decoder) on the instances of a
    COCO corpus, one class per structure; write its report into ``out`` and return it
    (``cache`` as in :func:`classify`)."""
    cfg = _config(config, overrides)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = _source(data, cfg)
    if source.kind == "folder":
        raise ValueError("segmentation needs masks: give a COCO corpus, not a class folder")
    present = source.structures
    classes = list(cfg.structures) if cfg.structures else present
    unknown = sorted(set(classes) - set(present))
    if unknown:
        raise ValueError(f"structures {unknown} not in the data; present: {present}")
    if not classes:
        raise ValueError(f"{source.description}: no annotated structures")
    records = list(source.records)
    splits = plan_splits(records, cfg)
    n_classes = len(classes) + 1
    run = _prepare(source, records, splits, cfg,
                   lambda enc: SegDecoder(enc.channels, n_classes,
                                                    width=cfg.decoder_width), classes, cache)
    for t in run.tensors.values():
        assert t.targets is not None
        t.targets[~t.valid()] = IGNORE

    def loss_fn(logits: torch.Tensor, _i: torch.Tensor, targets: torch.Tensor | None,
                valid: torch.Tensor) -> torch.Tensor:
        assert targets is not None
        targets = targets.to(logits.device).masked_fill(~valid.to(logits.device), IGNORE)
        ce = F.cross_entropy(logits, targets, ignore_index=IGNORE)
        return ce + dice_loss(logits, targets, valid.to(logits.device))

    def val_score() -> float:
        pred = _predict(run, "val", cfg.batch_size).argmax(1)
        return _val_dice(pred, run.tensors["val"], n_classes)

    fitres = _train(run, out_dir, resume, loss_fn, val_score, None)
    logits = _predict(run, "test", cfg.batch_size)
    result = _result(run, "segmentation", data, splits, fitres)
    result["structures"] = classes
    per_image = _seg_records(run, source, records, splits["test"], logits, classes)
    result["test"] = aggregate(per_image, seed=cfg.seed)
    result["test_per_image"] = per_image
    _save_model(run, out_dir, {"task": "segmentation", "structures": classes,
                               "encoder": run.encoder_name,
                               "model_config": run.encoder.model.config.to_dict(),
                               "finetune": cfg.to_dict()})
    return report.write_segmentation_report(out_dir, result)

