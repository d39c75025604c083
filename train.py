"""Train a stage of the Sculpt4D model (VAE -> 3D DiT -> 4D temporal adapter).

    python train.py experiment=paper_8 trainer.devices=8          # the original release's 4d_config_8
    python train.py attention=blockmask trainer.devices=8
    python train.py -m attention=blockmask,radial,framepack,rope experiment=tiny debug=fdr
    python train.py experiment=tiny_4d ckpt_path=last             # exact resume

See ``sculpt4d.lit.task`` for resume, logging and the multi-node (SLURM) path.
"""

import hydra
from omegaconf import DictConfig

from sculpt4d.config import register_resolvers

register_resolvers()


def _train(cfg: DictConfig) -> float | None:
    from sculpt4d.lit.task import get_metric_value, train

    metrics, _ = train(cfg)
    return get_metric_value(metrics, cfg.get("optimized_metric"))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """User errors print one line and exit 2, Ctrl-C exits 130 (as predict, prep and evaluate)."""
    from sculpt4d.config import run_user_task

    return run_user_task(_train, cfg)


if __name__ == "__main__":
    main()
