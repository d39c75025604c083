"""``python -m sculpt4d.app``: the web app (same config and overrides as ``python app.py``)."""

from sculpt4d.config import hydra_main


def main() -> None:
    from sculpt4d.app.ui import serve

    hydra_main("app", serve)


if __name__ == "__main__":
    main()
