"""The web app: frames, a zip or a video in; an animated mesh in the browser out.

python app.py                       # http://127.0.0.1:7860 with the shipped tiny model
python app.py app.port=8080 app.host=0.0.0.0 num_steps=20
"""

import hydra
from omegaconf import DictConfig

from sculpt4d.config import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="app")
def main(cfg: DictConfig) -> None:
    from sculpt4d.app.ui import serve
    from sculpt4d.config import run_user_task

    run_user_task(serve, cfg)


if __name__ == "__main__":
    main()
