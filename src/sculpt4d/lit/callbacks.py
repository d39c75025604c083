"""Callbacks: a plain progress line for job logs (progress bars do not survive redirection)."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from sculpt4d.utils.logging import get_logger

log = get_logger(__name__)


def _hms(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ProgressLog(Callback):
    """Every ``every_n_steps`` optimizer steps: ``step k/K | train/loss | it/s | elapsed | ETA`` (rank 0)."""

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = int(every_n_steps)
        self._t0 = 0.0
        self._step0 = 0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._t0, self._step0 = time.monotonic(), trainer.global_step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or self.every_n_steps <= 0 or step % self.every_n_steps or step == self._step0:
            return
        elapsed = time.monotonic() - self._t0
        rate = (step - self._step0) / max(elapsed, 1e-9)
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        eta = (total - step) / rate if total and rate > 0 else float("nan")
        loss = trainer.callback_metrics.get("train/loss")
        loss_s = f"{float(loss):.4f}" if loss is not None else "n/a"
        log.info(f"step {step}/{total or '?'} | loss {loss_s} | {rate:.2f} it/s | elapsed {_hms(elapsed)} | "
                 f"ETA {_hms(eta) if eta == eta else '?'}")
