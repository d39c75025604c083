"""``python -m sculpt4d.app`` / ``sculpt4d-app`` / ``python app.py``: the web app (config ``conf/app.yaml``)."""

from omegaconf import DictConfig

from sculpt4d.config import hydra_main


def _serve(cfg: DictConfig) -> None:
    from sculpt4d.app.ui import serve  # gradio: imported inside the Ctrl-C / user-error handling

    serve(cfg)


def main() -> None:
    hydra_main("app", _serve)


if __name__ == "__main__":
    main()
