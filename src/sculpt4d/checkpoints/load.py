"""Load weights into built components: one path for ``init_from`` (training) and ``from_pretrained`` (inference).

:func:`read_parts` resolves a spec (``hf://``, a path, or a path relative to the repository), reads every tensor
and splits them into ``{vae, model, conditioner}`` (:mod:`sculpt4d.checkpoints.keys`); :func:`load_components`
loads those parts strictly, routing a 3D DiT into a 4D model's backbone and a 4D export's backbone into a 3D DiT.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sculpt4d.checkpoints.diagnose import load_into
from sculpt4d.checkpoints.keys import COMPONENTS, backbone_part, is_4d_model_part, split_components
from sculpt4d.checkpoints.read import load_state_dict
from sculpt4d.checkpoints.resolve import resolve_checkpoint
from sculpt4d.errors import CheckpointError

log = logging.getLogger(__name__)
Parts = dict[str, dict[str, torch.Tensor]]

LATENT_KEYS = ("scale_factor", "latent_mean", "latent_std")


def init_latent_stats(cfg: dict) -> dict:
    """The DiT latent statistics (``scale_factor``, ``latent_mean``, ``latent_std``) in an export's config."""
    node = cfg.get("model", cfg) if cfg else {}
    vae = node.get("vae", {}) if isinstance(node, dict) else {}
    return {k: vae[k] for k in LATENT_KEYS if isinstance(vae, dict) and vae.get(k) is not None}


def adopt_latent_stats(vae: nn.Module, vae_cfg: dict | None, cfg: dict, skip: tuple[str, ...] = ()) -> None:
    """Set an export's latent statistics (its ``config.yaml`` ``cfg``) on ``vae`` and, when given, in the module's
    ``vae`` config node ``vae_cfg``, so the next export records them again; keys in ``skip`` are left as they are."""
    for key, value in init_latent_stats(cfg).items():
        if key not in skip:
            setattr(vae, key, value)
            if vae_cfg is not None:
                vae_cfg[key] = value


def resolve_init(spec: str | Path, root: str | Path | None = None) -> Path:
    """``init_from``: ``hf://...``, a path as given, or relative to ``root`` (the repository)."""
    s = str(spec)
    if not s.startswith("hf://") and not Path(s).expanduser().exists() and root is not None:
        cand = Path(root) / s
        if cand.exists():
            s = str(cand)
    return resolve_checkpoint(s)


def read_parts(spec: str | Path, root: str | Path | None = None) -> tuple[Parts, dict]:
    """Read an export / checkpoint: ``({vae, model, conditioner} state dicts, its config.yaml or {})``."""
    path = resolve_init(spec, root)
    cfg: dict[str, Any] = {}
    if path.is_dir() and (path / "config.yaml").is_file():
        cfg = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"), resolve=True)  # type: ignore[assignment]
    parts = split_components(load_state_dict(path))
    log.info("read %s: %s", path, ", ".join(f"{k} ({len(v)} tensors)" for k, v in parts.items() if v))
    return parts, cfg


def load_part(
    module: nn.Module,
    parts: Mapping[str, Mapping[str, torch.Tensor]],
    name: str,
    source: str,
    required: bool = True,
    strict: bool = True,
) -> bool:
    """Load ``parts[name]`` into ``module``; False (or CheckpointError if required) when absent.

    ``model`` parts are routed: a 3D DiT's keys fill a 4D model's ``backbone``; a 4D export's ``backbone.*``
    fills a 3D DiT."""
    sd = dict(parts.get(name) or {})
    if not sd:
        if required:
            raise CheckpointError(f"{source}: no '{name}.*' weights (no keys with prefix '{name}.')")
        return False
    label = f"{source} [{name}]"
    if name == "model":
        four_d_module = hasattr(module, "backbone") and hasattr(module, "adapter")
        if four_d_module and not is_4d_model_part(sd):
            module, label = module.backbone, f"{source} [model -> 4D backbone]"
        elif not four_d_module and is_4d_model_part(sd):
            sd, label = backbone_part(sd), f"{source} [4D backbone -> model]"
    load_into(module, sd, strict=strict, name=label)
    return True


def load_components(
    components: Any,
    parts: Parts,
    source: str,
    strict: bool = True,
    require: tuple[str, ...] = COMPONENTS,
) -> None:
    """Load every part present into ``components`` (:class:`~sculpt4d.models.factory.Components`)."""
    for name, module in components.modules().items():
        load_part(module, parts, name, source, required=name in require, strict=strict)


def load_component_weights(
    components: Any,
    sd: dict[str, torch.Tensor],
    source: str,
    strict: bool = True,
    require: tuple[str, ...] = COMPONENTS,
) -> None:
    """Load a flat state dict into the components; report missing/unexpected keys by name."""
    load_components(components, split_components(sd), source, strict=strict, require=require)


def load_exported(path: str | Path, attention_cfg: DictConfig | dict | None = None) -> tuple[Any, DictConfig]:
    """Load our export format: ``<dir>/config.yaml`` (model node) + ``<dir>/model.safetensors``."""
    from sculpt4d.models.factory import build_components

    path = Path(path)
    cfg_file = path / "config.yaml"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: no config.yaml (expected an exported sculpt4d checkpoint folder)")
    cfg = OmegaConf.load(cfg_file)
    model_cfg = cfg.get("model", cfg)
    if attention_cfg is None:
        attention_cfg = cfg.get("attention", None)
    components = build_components(model_cfg, attention_cfg, four_d=True)
    load_component_weights(components, load_state_dict(path), source=str(path), strict=True)
    return components.eval(), cfg


def load_vae_from(vae: nn.Module, spec: str | Path, root: str | Path | None = None) -> dict:
    """Load another export's VAE, weights and latent statistics, into ``vae`` (e.g. a VAE trained on after the
    DiT, sampled with the DiT it was not trained with); returns the statistics taken. The architectures must
    match (strict load); an export whose ``config.yaml`` records no statistics is refused, since the DiT's
    latents would be scaled with the wrong ones."""
    parts, cfg = read_parts(spec, root)
    load_part(vae, parts, "vae", f"vae_ckpt {spec}")
    stats = init_latent_stats(cfg)
    if "scale_factor" not in stats:
        raise CheckpointError(
            f"{spec}: no latent statistics (model.vae.scale_factor in a config.yaml beside the weights); "
            "vae_ckpt takes an exported folder"
        )
    adopt_latent_stats(vae, None, cfg)
    return stats
