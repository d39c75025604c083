"""Hydra helpers for the entry points (lightning-hydra-template style)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sculpt4d.utils.logging import get_logger

log = get_logger(__name__)


def instantiate_callbacks(cfg: DictConfig | None) -> list:
    """Every child node with a ``_target_`` (``callbacks: null`` gives none)."""
    from hydra.utils import instantiate

    out = []
    if not cfg:
        return out
    if not isinstance(cfg, DictConfig):
        raise TypeError("callbacks config must be a DictConfig")
    for name, node in cfg.items():
        if isinstance(node, DictConfig) and "_target_" in node:
            log.info(f"callback {name}: <{node._target_}>")
            out.append(instantiate(node))
    return out


def instantiate_loggers(cfg: DictConfig | None) -> list:
    """Every logger node with a ``_target_`` (``logger: null`` gives none)."""
    from hydra.utils import instantiate

    out = []
    if not cfg:
        return out
    for name, node in cfg.items():
        if isinstance(node, DictConfig) and "_target_" in node:
            log.info(f"logger {name}: <{node._target_}>")
            out.append(instantiate(node))
    return out


def task_wrapper(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Log exceptions, always print the output dir and close W&B (keeps multiruns going cleanly)."""

    @functools.wraps(fn)
    def wrap(cfg: DictConfig) -> Any:
        from sculpt4d.errors import Sculpt4DError

        try:
            return fn(cfg)
        except Sculpt4DError:  # a user error: the entry point prints its one line
            raise
        except Exception:
            log.exception("task failed")
            raise
        finally:
            out = OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_missing=False)
            try:
                log.info(f"output dir: {out}")
            except Exception:  # noqa: BLE001
                pass
            try:
                import wandb

                if wandb.run:
                    wandb.finish()
            except ImportError:
                pass

    return wrap


def extras(cfg: DictConfig) -> None:
    """Optional niceties before a task: silence python warnings, print (and save) the config tree."""
    ex = cfg.get("extras") or {}
    if ex.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if ex.get("print_config"):
        print_config_tree(cfg, save_to_file=True)


def print_config_tree(
    cfg: DictConfig,
    save_to_file: bool = False,
    order: tuple[str, ...] = (
        "stage",
        "data",
        "model",
        "attention",
        "lit",
        "trainer",
        "callbacks",
        "logger",
        "paths",
    ),
) -> None:
    """Rich tree of the config (first ``order``, then the rest); also written to ``<output_dir>/config_tree.log``."""
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("CONFIG", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order and k != "hydra"]
    for key in keys:
        branch = tree.add(str(key))
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=False) if isinstance(node, DictConfig) else str(node)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_to_file:
        out = OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_missing=False)
        if out:
            with open(Path(out) / "config_tree.log", "w") as f:
                rich.print(tree, file=f)


def get_metric_value(metric_dict: dict[str, Any], metric_name: str | None) -> float | None:
    """The value Optuna optimises (``optimized_metric``)."""
    if not metric_name:
        return None
    if metric_name not in metric_dict:
        log.warning(
            f"metric '{metric_name}' not found (available: {sorted(metric_dict)}); is it logged by the "
            "LightningModule (e.g. validation ran) and is `optimized_metric` correct?"
        )
        return None
    value = metric_dict[metric_name]
    return float(value.item() if hasattr(value, "item") else value)
