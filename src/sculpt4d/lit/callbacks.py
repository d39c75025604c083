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

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if (
            not trainer.is_global_zero
            or self.every_n_steps <= 0
            or step % self.every_n_steps
            or step == self._step0
        ):
            return
        elapsed = time.monotonic() - self._t0
        rate = (step - self._step0) / max(elapsed, 1e-9)
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        eta = (total - step) / rate if total and rate > 0 else float("nan")
        loss = trainer.callback_metrics.get("train/loss")
        loss_s = f"{float(loss):.4f}" if loss is not None else "n/a"
        log.info(
            f"step {step}/{total or '?'} | loss {loss_s} | {rate:.2f} it/s | elapsed {_hms(elapsed)} | "
            f"ETA {_hms(eta) if eta == eta else '?'}"
        )


class FitScheduleToTime(Callback):
    """Shrink ``max_steps`` and the LR schedule to what fits in ``trainer.max_time`` (time-budgeted runs).

    After ``calibration_steps`` optimizer steps, and again every ``refit_every_n_steps``, it measures the
    recent step rate and sets the run's length to ``step + remaining_time · rate · safety`` (never longer
    than configured), updating ``trainer.max_steps`` and the ``total_steps`` of a
    :class:`~sculpt4d.lit.schedule.WarmupCosine` schedule, so the cosine ends when the time budget does
    (machines shared with other jobs change speed). Set ``training.steps`` to an upper bound. Without
    ``max_time`` it does nothing.

    A time budget trains fewer steps on a slower machine, so a recipe's scores hold only near the speed
    they were measured at: with ``reference_steps_per_s`` (the rate of the run behind the recipe's
    published numbers) it warns once, at the first refit after calibration, when this machine runs below
    ``slow_fraction`` of it, naming both rates and the steps the budget now allows.
    """

    def __init__(
        self,
        calibration_steps: int = 20,
        refit_every_n_steps: int = 100,
        safety: float = 0.95,
        reference_steps_per_s: float | None = None,
        slow_fraction: float = 0.5,
    ) -> None:
        self.calibration_steps = int(calibration_steps)
        self.refit_every_n_steps = int(refit_every_n_steps)
        self.safety = float(safety)
        self.reference_steps_per_s = None if reference_steps_per_s is None else float(reference_steps_per_s)
        self.slow_fraction = float(slow_fraction)
        self._t0 = 0.0
        self._step0 = 0
        self._upper = -1
        self.fits = 0

    def state_dict(self) -> dict[str, Any]:
        return {"fits": self.fits}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fits = int(state.get("fits", 0))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._t0, self._step0 = time.monotonic(), trainer.global_step
        self._upper = trainer.max_steps

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        window = self.calibration_steps if self.fits == 0 else self.refit_every_n_steps
        if window <= 0 or trainer.global_step - self._step0 < window:
            return
        from lightning.pytorch.callbacks import Timer

        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        remaining = timer.time_remaining("train") if timer is not None else None
        now = time.monotonic()
        rate = (trainer.global_step - self._step0) / max(now - self._t0, 1e-9)  # over the last window
        self._t0, self._step0 = now, trainer.global_step
        self.fits += 1
        if remaining is None:
            return
        new_total = int(trainer.global_step + remaining * rate * self.safety)
        if self._upper > 0:
            new_total = min(new_total, self._upper)
        trainer.fit_loop.epoch_loop.max_steps = max(new_total, trainer.global_step + 1)
        for cfg in trainer.lr_scheduler_configs:
            for fn in getattr(cfg.scheduler, "lr_lambdas", []):
                if hasattr(fn, "total_steps"):
                    fn.total_steps = trainer.max_steps
        log.info(
            f"time budget: {rate:.3f} steps/s, {remaining / 60:.1f} min left -> max_steps = "
            f"{trainer.max_steps} (LR schedule fitted to the budget)"
        )
        if self.fits == 2:  # the calibration window includes warm-up; the first refit is representative
            self._check_speed(rate, trainer.max_steps)

    def _check_speed(self, rate: float, max_steps: int) -> None:
        ref = self.reference_steps_per_s
        if ref is None or rate >= self.slow_fraction * ref:
            return
        log.warning(
            f"this machine trains at {rate:.3f} steps/s, {rate / ref:.2f}x the {ref:.3f} steps/s of the run "
            f"behind this recipe's published numbers: the time budget allows {max_steps} steps, so expect "
            "lower scores (set training.steps and trainer.max_time=null to train a fixed number of steps)"
        )
