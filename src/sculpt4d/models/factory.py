"""Build the model components from a Hydra ``model`` node and load their weights.

A model node (``conf/model/*.yaml``) has ``vae``, ``dit`` and ``conditioner`` sub-nodes with ``_target_``
plus ``adapter`` (LoRA rank, frame-embedding size). The 4D model wraps the 3D DiT with the attention
variant's mask. Weights come from either our export format (``config.yaml`` + ``model.safetensors`` with
``vae.* / model.* / conditioner.*`` keys) or the upstream layouts handled by :mod:`sculpt4d.hub`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sculpt4d.errors import CheckpointError

COMPONENTS = ("vae", "model", "conditioner")

# Upstream (Hunyuan3D / Sculpt4D Lightning) prefixes -> our component names.
UPSTREAM_PREFIXES = {
    "first_stage_model.": "vae.",
    "cond_stage_model.main_image_encoder.model.": "conditioner.dinov2.",
    "cond_stage_model.": "conditioner.",
    "model.": "model.",
}


@dataclass
class Components:
    """The three networks of a Sculpt4D model (plain ``nn.Module``s, no Lightning inside)."""

    vae: nn.Module
    model: nn.Module  # DiT4D (4D) or HunyuanDiT (3D)
    conditioner: nn.Module

    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.vae, "model": self.model, "conditioner": self.conditioner}

    def state_dict(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, module in self.modules().items():
            out.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        return out

    def to(self, *args: Any, **kwargs: Any) -> Components:
        for module in self.modules().values():
            module.to(*args, **kwargs)
        return self

    def eval(self) -> Components:
        for module in self.modules().values():
            module.eval().requires_grad_(False)
        return self


def _plain(cfg: DictConfig | dict) -> DictConfig:
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)


def build_components(
    model_cfg: DictConfig | dict,
    attention_cfg: DictConfig | dict | None = None,
    four_d: bool = True,
) -> Components:
    """Instantiate VAE, DiT (wrapped as DiT4D when ``four_d``) and conditioner from a model node."""
    from sculpt4d.models.dit import DiT4D

    model_cfg = _plain(model_cfg)
    vae = instantiate(model_cfg.vae)
    dit = instantiate(model_cfg.dit)
    conditioner = instantiate(model_cfg.conditioner)
    if four_d:
        adapter = model_cfg.get("adapter", {}) or {}
        attention = OmegaConf.to_container(_plain(attention_cfg or {"variant": "blockmask"}), resolve=True)
        dit = DiT4D(
            backbone=dit,
            attention=attention,
            lora_rank=int(adapter.get("lora_rank", 16)),
            max_frames=int(adapter.get("max_frames", 64)),
        )
    return Components(vae=vae, model=dit, conditioner=conditioner)


def split_components(sd: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Split a flat state dict into ``{vae, model, conditioner}`` by key prefix (ours or upstream)."""
    out: dict[str, dict[str, torch.Tensor]] = {c: {} for c in COMPONENTS}
    unknown: list[str] = []
    for key, value in sd.items():
        for prefix in ("_forward_module.", "module."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        for old, new in UPSTREAM_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        comp, _, rest = key.partition(".")
        if comp in out and rest:
            out[comp][rest] = value
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:5])
        raise CheckpointError(
            f"{len(unknown)} checkpoint keys belong to no component (expected prefixes vae./model./conditioner. "
            f"or the upstream first_stage_model./model./cond_stage_model.): {shown}"
        )
    return out


def load_component_weights(
    components: Components,
    sd: dict[str, torch.Tensor],
    source: str,
    strict: bool = True,
    require: tuple[str, ...] = COMPONENTS,
) -> None:
    """Load a flat state dict into the components; report missing/unexpected keys by name."""
    from sculpt4d.hub import load_into

    parts = split_components(sd)
    for name, module in components.modules().items():
        part = parts[name]
        if not part:
            if name in require:
                raise CheckpointError(f"{source}: no weights for '{name}' (no keys with prefix '{name}.')")
            continue
        is_3d = not any(k.startswith(("backbone.", "adapter.")) for k in part)
        if name == "model" and is_3d and hasattr(module, "backbone"):
            # A 3D DiT checkpoint loaded into the 4D model: it fills the frozen backbone.
            load_into(module.backbone, part, strict=strict, name=f"{source} [model -> 4D backbone]")
            continue
        load_into(module, part, strict=strict, name=f"{source} [{name}]")


def load_exported(
    path: str | Path, attention_cfg: DictConfig | dict | None = None
) -> tuple[Components, DictConfig]:
    """Load our export format: ``<dir>/config.yaml`` (model node) + ``<dir>/model.safetensors``."""
    from sculpt4d.hub import load_state_dict

    path = Path(path)
    cfg_file = path / "config.yaml"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: no config.yaml (expected an exported sculpt4d checkpoint folder)")
    cfg = OmegaConf.load(cfg_file)
    model_cfg = cfg.get("model", cfg)
    if attention_cfg is None:
        attention_cfg = cfg.get("attention", None)
    components = build_components(model_cfg, attention_cfg, four_d=True)
    sd = load_state_dict(path)
    load_component_weights(components, sd, source=str(path), strict=True)
    return components.eval(), cfg
