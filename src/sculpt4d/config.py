"""OmegaConf resolvers shared by every entry point."""

from pathlib import Path

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """``${basename:path}``: the last component of a path (used for default output folders)."""
    if not OmegaConf.has_resolver("basename"):
        OmegaConf.register_new_resolver("basename", lambda p: Path(str(p)).name)


CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def run_user_task(task, cfg):
    """Run ``task(cfg)``; a user error (bad input, checkpoint, missing package) prints one line, exits 2."""
    import sys

    from sculpt4d.errors import Sculpt4DError

    try:
        return task(cfg)
    except Sculpt4DError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def hydra_main(config_name: str, task, resolve: bool = False) -> None:
    """``python -m sculpt4d.<task>``: compose ``conf/<config_name>.yaml`` with the CLI and run ``task``."""
    import hydra

    register_resolvers()

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
    def _main(cfg) -> None:
        if resolve:
            OmegaConf.resolve(cfg)
        run_user_task(task, cfg)

    _main()
