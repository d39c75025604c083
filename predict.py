"""Generate a mesh sequence from an image sequence.

python predict.py input=demos/box
python predict.py model=sculpt4d ckpt=hf://TencentARC/Sculpt4D/blockmask_bf16 input=demos/door
"""

import hydra
from omegaconf import DictConfig

from sculpt4d.config import register_resolvers

register_resolvers()


def _predict(cfg: DictConfig):
    from sculpt4d.predict import run_predict

    return run_predict(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    """User errors print one line and exit 2, Ctrl-C exits 130 (the heavy imports included)."""
    from sculpt4d.config import run_user_task

    run_user_task(_predict, cfg)


if __name__ == "__main__":
    main()
