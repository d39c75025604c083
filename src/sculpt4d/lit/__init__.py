"""LightningModules for the three training stages, EMA, schedules and the training task."""

from sculpt4d.lit.base import BaseLitModule
from sculpt4d.lit.ema import ParameterEMA
from sculpt4d.lit.flow_modules import DiT3DModule, Sculpt4DModule
from sculpt4d.lit.init import estimate_scale_factor, load_init
from sculpt4d.lit.schedule import WarmupCosine, warmup_cosine
from sculpt4d.lit.vae_module import VAEModule, occupancy_iou

__all__ = [
    "BaseLitModule",
    "DiT3DModule",
    "ParameterEMA",
    "Sculpt4DModule",
    "VAEModule",
    "WarmupCosine",
    "estimate_scale_factor",
    "load_init",
    "occupancy_iou",
    "warmup_cosine",
]
