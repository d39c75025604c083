"""The web app: ``python app.py`` / ``python -m sculpt4d.app`` / ``make app`` (config ``conf/app.yaml``)."""

from sculpt4d.app.jobs import Cancelled, Generator, Result, Settings

__all__ = ["Cancelled", "Generator", "Result", "Settings"]
