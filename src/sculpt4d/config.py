"""OmegaConf resolvers shared by every entry point."""

from pathlib import Path

from omegaconf import OmegaConf


def per_job_dir(path: str) -> str:
    """``path``, or in a Hydra multirun this job's own folder (``<sweep dir>/<job number>``), so sweep jobs
    never overwrite each other's outputs."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return str(HydraConfig.get().runtime.output_dir)
    return str(path)


def task_overrides() -> list[str]:
    """The command-line overrides of this Hydra job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def hydra_job_dir() -> list[str]:
    """This Hydra job's own output folder in a multirun (it already holds ``.hydra/``), else nothing."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return [str(HydraConfig.get().runtime.output_dir)]
    return []


def register_resolvers() -> None:
    """``${basename:path}``: the last component of a path; ``${per_job:path}``: see :func:`per_job_dir`."""
    if not OmegaConf.has_resolver("basename"):
        OmegaConf.register_new_resolver("basename", lambda p: Path(str(p)).name)
    if not OmegaConf.has_resolver("per_job"):
        OmegaConf.register_new_resolver("per_job", per_job_dir)


# The Hydra configs ship inside the package (``sculpt4d/conf``, package data in the wheel). In a source
# checkout ``src/sculpt4d/conf`` is a symlink to the repository's ``conf/``, the one copy users edit.
CONF_DIR = Path(__file__).resolve().parent / "conf"


def run_user_task(task, cfg):
    """Run ``task(cfg)``; a user error (bad input, checkpoint, missing package) prints one line, exits 2
    (1 for :class:`~sculpt4d.errors.FailedObjectsError`).

    Ctrl-C prints ``interrupted`` and exits 130 (temp outputs are removed on the way out).
    """
    import sys

    from sculpt4d.errors import Sculpt4DError
    from sculpt4d.utils import interrupt

    interrupt.install()
    try:
        return task(cfg)
    except Sculpt4DError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def hydra_main(config_name: str, task, resolve: bool = False):
    """``python -m sculpt4d.<task>``, the ``sculpt4d-<task>`` console script and the root ``<task>.py`` shim:
    compose ``conf/<config_name>.yaml`` (the packaged configs) with the CLI and run ``task``.

    Returns what ``task`` returns (a sweeper such as Optuna reads the job's return value).
    """
    import hydra

    register_resolvers()

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
    def _main(cfg):
        if resolve:
            OmegaConf.resolve(cfg)
        return run_user_task(task, cfg)

    return _main()
