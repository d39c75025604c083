"""Rank-aware logging and a CSV logger that continues its file when a run resumes."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only


class RankedLogger(logging.LoggerAdapter):
    """Prefixes messages with the process rank; ``rank_zero_only=True`` logs on rank 0 only.

    ``log.info("msg", rank=1)`` logs only on rank 1.
    """

    def __init__(
        self, name: str = __name__, rank_zero_only: bool = False, extra: Mapping[str, object] | None = None
    ):
        super().__init__(logging.getLogger(name), extra or {})
        self.rank_zero_only = rank_zero_only

    def log(self, level: int, msg: str, *args: Any, rank: int | None = None, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        current = getattr(rank_zero_only, "rank", None)
        if current is None:
            current = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))
        msg, kwargs = self.process(msg, kwargs)
        if self.rank_zero_only and current != 0:
            return
        if rank is not None and current != rank:
            return
        self.logger.log(level, f"[rank: {current}] {msg}", *args, **kwargs)


def get_logger(name: str = __name__, rank_zero_only: bool = True) -> RankedLogger:
    return RankedLogger(name, rank_zero_only=rank_zero_only)


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv`` (Lightning's writer deletes it) and continues its columns."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(set(header))


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to ``<save_dir>/<name>/version_<v>/metrics.csv`` when it exists.

    With a fixed ``version`` (train.py sets it from the run's ``run.json`` on ``ckpt_path=last``), a resumed
    run continues the same CSV, like ``WandbLogger(id=..., resume="allow")`` continues a W&B run.
    """

    @property
    @rank_zero_only
    def experiment(self) -> ExperimentWriter:  # type: ignore[override]
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
