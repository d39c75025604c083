"""The train task: ``python -m sculpt4d.train`` / ``sculpt4d-train`` / ``python train.py`` (same overrides).

    python -m sculpt4d.train experiment=paper_8 trainer.devices=8     # the original release's 4d_config_8
    python -m sculpt4d.train experiment=tiny_4d ckpt_path=last        # exact resume

See ``sculpt4d.lit.task`` for resume, logging and the multi-node (SLURM) path.
"""

from __future__ import annotations

from omegaconf import DictConfig


def run_train(cfg: DictConfig) -> float | None:
    """Train one stage; returns ``cfg.optimized_metric`` (what a Hydra sweeper such as Optuna minimises)."""
    from sculpt4d.lit.task import get_metric_value, train

    metrics, _ = train(cfg)
    return get_metric_value(metrics, cfg.get("optimized_metric"))


def main() -> float | None:
    """User errors print one line and exit 2, Ctrl-C exits 130 (as predict, prep and evaluate)."""
    from sculpt4d.config import hydra_main

    return hydra_main("train", run_train)


if __name__ == "__main__":
    main()
