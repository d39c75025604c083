"""OmegaConf resolvers shared by every entry point."""

from pathlib import Path

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """``${basename:path}``: the last component of a path (used for default output folders)."""
    if not OmegaConf.has_resolver("basename"):
        OmegaConf.register_new_resolver("basename", lambda p: Path(str(p)).name)
