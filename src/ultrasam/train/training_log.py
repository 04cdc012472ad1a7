"""What a training run reports while it runs: per-step metrics averaged over a logging window,
written as JSON lines (rank 0), to TensorBoard when it is installed, and on a progress bar."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .config import TrainConfig
from .step import StepOutcome

log = logging.getLogger(__name__)


class TrainingLog:
    """Accumulates each step's metrics; every ``run.log_every`` steps (and at the last) writes
    their window averages: per-pass ``loss_i`` / ``iou_i`` and ``loss`` per prompt, ``grad_norm``,
    ``lr``, ``seconds`` and ``images_per_s`` of the window."""

    def __init__(self, cfg: TrainConfig, out_dir: Path, step: int, main: bool) -> None:
        run = cfg.run
        self.cfg = cfg
        self.main = main
        self.path = out_dir / "metrics.jsonl"
        self.writer: Any = None
        if main and run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=step + 1)
            except ImportError:
                log.info("tensorboard is not installed: metrics go to %s only", self.path)
        self.progress: Any = None
        if main and run.progress:
            try:
                from tqdm import tqdm
            except ImportError:  # optional: the JSONL file and the log carry the progress
                log.info("tqdm is not installed: no progress bar")
            else:
                self.progress = tqdm(total=run.steps, initial=step, desc="train", unit="step")
        self.window: dict[str, float] = {}
        self.first_loss: float | None = None
        self.last_loss: float | None = None
        self.tic = time.perf_counter()

    def add(self, step: int, lr: float, outcome: StepOutcome, world: int) -> None:
        """Add step ``step``'s metrics (sums over every process, averaged per prompt)."""
        sums, n_prompts = outcome.sums, outcome.n_prompts
        stats = torch.stack([sums[k] for k in sorted(sums)] + [n_prompts / world])
        if world > 1:
            dist.all_reduce(stats)
        n_total = stats[-1].item()
        for key, value in zip(sorted(sums), stats[:-1].tolist()):
            self.window[key] = self.window.get(key, 0.0) + value / n_total
        self.window["grad_norm"] = self.window.get("grad_norm", 0.0) + outcome.grad_norm.item()
        self.window["n"] = self.window.get("n", 0.0) + 1
        if self.progress is not None:
            self.progress.update(1)
            self.progress.set_postfix(
                loss=f"{sums['loss'].item() / n_prompts.item() * world:.4f}")
        run = self.cfg.run
        if step % run.log_every == 0 or step == run.steps:
            self._write(step, lr, world)

    def _write(self, step: int, lr: float, world: int) -> None:
        n = self.window.pop("n")
        record = {k: v / n for k, v in sorted(self.window.items())}
        elapsed = time.perf_counter() - self.tic
        record.update(step=step, lr=lr, seconds=round(elapsed, 3),
                      images_per_s=n * self.cfg.optim.accumulate * world
                      * self.cfg.data.images_per_batch / max(elapsed, 1e-9))
        self.window, self.tic = {}, time.perf_counter()
        self.first_loss = record["loss"] if self.first_loss is None else self.first_loss
        self.last_loss = record["loss"]
        if self.main:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
            if self.writer is not None:
                for k, v in record.items():
                    self.writer.add_scalar(f"train/{k}", v, step)

    def close_progress(self) -> None:
        if self.progress is not None:
            self.progress.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
