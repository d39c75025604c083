"""Generate a mesh sequence from an image sequence.

python predict.py input=demos/box
python predict.py model=sculpt4d ckpt=hf://TencentARC/Sculpt4D/blockmask_bf16 input=demos/door
"""

import hydra
from omegaconf import DictConfig

from sculpt4d.config import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from sculpt4d.predict import predict_main

    predict_main(cfg)


if __name__ == "__main__":
    main()
