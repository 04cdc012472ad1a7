"""The fine-tuning loop: epochs of seeded batches, early stopping on validation, exact resume.

Read top to bottom:

1. the optimiser (AdamW, one parameter group per learning rate) and, when resuming, the saved
   state (weights, optimiser moments, best weights so far, epoch, patience counter, history,
   elapsed seconds);
2. per epoch: the learning rate of a cosine schedule over ``epochs``; a ``torch.Generator``
   seeded from (seed, epoch) draws the batch order (a permutation, or weighted sampling with
   replacement for a balanced sampler) and is handed to ``batch_loss`` for augmentation, and
   the global RNG (dropout) is seeded the same way; so an epoch depends only on the state at
   its start, and a run resumed from any saved epoch ends bit-identical to an uninterrupted one;
3. after the epoch: the validation score (higher is better), best weights kept, state saved
   atomically; stop after ``patience`` epochs without improvement, or once ``max_seconds`` of
   training have passed (checked between epochs);
4. the best weights are loaded back into the network.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    epochs: int = 30
    patience: int = 6
    batch_size: int = 16
    weight_decay: float = 1e-4
    seed: int = 0
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 2:
            raise ValueError(f"need epochs >= 1, patience >= 1, batch_size >= 2; got {self}")


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = -math.inf
    stopped: str = "epochs"
    seconds: float = 0.0


def lr_factor(epoch: int, epochs: int) -> float:
    """Cosine decay from 1 at epoch 0 towards 0 at ``epochs``."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def epoch_batches(n: int, batch_size: int, gen: torch.Generator,
                  weights: np.ndarray | None = None) -> list[torch.Tensor]:
    """Index batches of one epoch; a last batch of one is merged into the previous one
    (BatchNorm needs two samples)."""
    if weights is None:
        order = torch.randperm(n, generator=gen)
    else:
        order = torch.multinomial(torch.as_tensor(weights, dtype=torch.double), n,
                                  replacement=True, generator=gen)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2] = torch.cat([batches[-2], batches.pop()])
    return batches


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2 ** 63)


def _save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def fit(net: nn.Module, groups: Sequence[dict[str, Any]], n_train: int,
        batch_loss: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
        val_score: Callable[[], float], cfg: LoopConfig, state_path: Path | None = None,
        resume: bool = False, sample_weights: np.ndarray | None = None) -> FitResult:
    """Train ``net`` (parameter ``groups``: dicts with ``params`` and ``lr``) and return the
    history; ``batch_loss(indices, generator)`` -> scalar loss of those training items."""
    if n_train < 2:
        raise ValueError(f"need at least 2 training items, got {n_train}")
    groups = [g for g in groups if any(p.requires_grad for p in g["params"])]
    if not groups:
        raise ValueError("nothing to train: every parameter is frozen")
    base_lrs = [float(g["lr"]) for g in groups]
    opt = torch.optim.AdamW([dict(g) for g in groups], weight_decay=cfg.weight_decay)
    res = FitResult()
    start, bad, best_state = 0, 0, None
    # 1. resume.
    if resume and state_path is not None and state_path.is_file():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["optimizer"])
        best_state, start, bad = st["best_net"], int(st["epoch"]), int(st["bad_epochs"])
        res = FitResult(list(st["history"]), int(st["best_epoch"]), float(st["best_score"]),
                        str(st["stopped"]), float(st["seconds"]))
        log.info("resumed from %s at epoch %d", state_path, start)
        if st["done"]:
            start = cfg.epochs
    done = start >= cfg.epochs
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        # 2. one seeded epoch.
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * lr_factor(epoch, cfg.epochs)
        gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch))
        torch.manual_seed(_epoch_seed(cfg.seed, epoch) + 1)
        net.train()
        for m in net.modules():
            # BatchNorm with cumulative statistics (momentum None, e.g. the pooled head's)
            # restarts them: they become the statistics of this epoch's features.
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is None:
                m.reset_running_stats()
        losses = []
        for idx in epoch_batches(n_train, cfg.batch_size, gen, sample_weights):
            loss = batch_loss(idx, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        # 3. validate, keep the best, save, maybe stop.
        net.eval()
        with torch.no_grad():
            score = float(val_score())
        res.seconds += time.perf_counter() - t0
        res.history.append({"epoch": epoch, "train_loss": float(np.mean(losses)),
                            "val_score": score, "lr": opt.param_groups[0]["lr"],
                            "seconds": res.seconds})
        log.info("epoch %d: train loss %.4f, val %.4f", epoch, res.history[-1]["train_loss"],
                 score)
        if score > res.best_score:
            res.best_score, res.best_epoch, bad = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            bad += 1
        if bad >= cfg.patience:
            res.stopped, done = "early stopping", True
        elif cfg.max_seconds is not None and res.seconds >= cfg.max_seconds:
            res.stopped, done = "time budget", True
        elif epoch + 1 == cfg.epochs:
            done = True
        if state_path is not None:
            _save(state_path, {"net": net.state_dict(), "optimizer": opt.state_dict(),
                               "best_net": best_state, "epoch": epoch + 1, "bad_epochs": bad,
                               "history": res.history, "best_epoch": res.best_epoch,
                               "best_score": res.best_score, "stopped": res.stopped,
                               "seconds": res.seconds, "done": done})
        if done:
            break
    # 4. best weights back.
    if best_state is not None:
        net.load_state_dict(best_state)
    return res
