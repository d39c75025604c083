"""FitScheduleToTime: a time-budgeted run fits its step count and LR schedule to the machine's speed."""

from __future__ import annotations

import logging
import time

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from sculpt4d.lit.callbacks import FitScheduleToTime
from sculpt4d.lit.schedule import WarmupCosine

STEP_S = 0.02  # each training step sleeps this long: about 50 steps/s
UPPER = 100_000  # the configured step bound, far beyond what the budget allows


class _SleepyModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        time.sleep(STEP_S)
        return ((batch[0] - self.w) ** 2).mean()

    def configure_optimizers(self) -> dict:
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(warmup_steps=0, total_steps=UPPER))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _fit(callback: FitScheduleToTime, tmp_path, seconds: int = 2) -> pl.Trainer:
    trainer = pl.Trainer(
        max_time={"seconds": seconds},
        max_steps=UPPER,
        callbacks=[callback],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    data = DataLoader(TensorDataset(torch.randn(UPPER, 2)), batch_size=1)
    trainer.fit(_SleepyModule(), data)
    return trainer


def test_budget_shrinks_max_steps_and_the_cosine_to_the_time(tmp_path) -> None:
    trainer = _fit(FitScheduleToTime(calibration_steps=5, refit_every_n_steps=20), tmp_path)
    # 2 s at <= 50 steps/s: at most ~100 steps fit; the bound of 100,000 was shrunk, the cosine with it
    assert 5 < trainer.max_steps <= 2 / STEP_S
    (sched_cfg,) = trainer.lr_scheduler_configs
    (fn,) = sched_cfg.scheduler.lr_lambdas
    assert fn.total_steps == trainer.max_steps


def test_warns_once_when_the_machine_is_slower_than_the_reference(tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="sculpt4d.lit.callbacks")
    fast_reference = FitScheduleToTime(calibration_steps=5, refit_every_n_steps=10, reference_steps_per_s=1e4)
    _fit(fast_reference, tmp_path)
    slow = [r.getMessage() for r in caplog.records if "steps/s of the run behind" in r.getMessage()]
    assert len(slow) == 1, slow
    assert "10000.000 steps/s" in slow[0] and "expect lower scores" in slow[0]


def test_no_warning_at_or_above_the_reference_speed(tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="sculpt4d.lit.callbacks")
    slow_reference = FitScheduleToTime(calibration_steps=5, refit_every_n_steps=10, reference_steps_per_s=1.0)
    _fit(slow_reference, tmp_path)
    assert not [r for r in caplog.records if "steps/s of the run behind" in r.getMessage()]


@pytest.mark.parametrize("experiment", ["tiny_vae", "tiny_dit3d", "tiny_4d"])
def test_recipe_stages_carry_their_reference_speed(experiment: str, tmp_path) -> None:
    from conftest import compose_train
    from hydra.utils import instantiate

    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    callback = instantiate(cfg.callbacks.fit_to_time)
    assert callback.reference_steps_per_s is not None and callback.reference_steps_per_s > 0
