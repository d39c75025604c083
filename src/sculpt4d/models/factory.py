"""Build the model components from a Hydra ``model`` node and load their weights.

:func:`build_components` is the only constructor of the networks: the LightningModules, the pipeline and
``Sculpt4DPipeline.with_attention`` all call it. A model node (``conf/model/*.yaml``) has ``vae``, ``dit`` and ``conditioner`` sub-nodes with ``_target_``
plus ``adapter`` (LoRA rank, frame-embedding size). The 4D model wraps the 3D DiT with the attention
variant's mask. Weights are loaded by :mod:`sculpt4d.checkpoints.load` (our export format or the upstream
layouts, every key translation in :mod:`sculpt4d.checkpoints.keys`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sculpt4d.checkpoints.keys import COMPONENTS, UPSTREAM_PREFIXES, split_components  # noqa: F401
from sculpt4d.checkpoints.load import load_component_weights, load_exported  # noqa: F401  (re-exported)


@dataclass
class Components:
    """The three networks of a Sculpt4D model (plain ``nn.Module``s, no Lightning inside)."""

    vae: nn.Module
    model: nn.Module | None = None  # DiT4D (4D) or HunyuanDiT (3D); None when only the VAE was built
    conditioner: nn.Module | None = None

    def modules(self) -> dict[str, nn.Module]:
        named = {"vae": self.vae, "model": self.model, "conditioner": self.conditioner}
        return {name: module for name, module in named.items() if module is not None}

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


def wrap_4d(backbone: nn.Module, attention_cfg: DictConfig | dict | None, adapter: Any = None) -> nn.Module:
    """The 4D model: ``backbone`` (a 3D DiT) + a fresh temporal adapter under the attention variant's mask."""
    from sculpt4d.models.dit import DiT4D

    adapter = adapter or {}
    attention = OmegaConf.to_container(_plain(attention_cfg or {"variant": "blockmask"}), resolve=True)
    return DiT4D(
        backbone=backbone,
        attention=attention,
        lora_rank=int(adapter.get("lora_rank", 16)),
        max_frames=int(adapter.get("max_frames", 64)),
    )


def build_components(
    model_cfg: DictConfig | dict,
    attention_cfg: DictConfig | dict | None = None,
    four_d: bool = True,
    order: tuple[str, ...] = ("vae", "model", "conditioner"),
) -> Components:
    """Instantiate VAE, DiT (wrapped as DiT4D when ``four_d``) and conditioner from a model node.

    ``order``: the networks to build, in the order they are instantiated, which fixes the random draws each
    one gets under a seed (the training stages build the conditioner before the DiT, as they always have; the
    VAE stage builds only ``("vae",)``). The 4D adapter is created last.
    """
    model_cfg = _plain(model_cfg)
    nodes = {"vae": model_cfg.vae, "model": model_cfg.dit, "conditioner": model_cfg.conditioner}
    built = {name: instantiate(nodes[name]) for name in order}
    if four_d and "model" in built:
        built["model"] = wrap_4d(built["model"], attention_cfg, model_cfg.get("adapter", {}) or {})
    return Components(**built)
