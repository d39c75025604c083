"""3D backbone (Hunyuan3D-2.1 DiT incl. MoE) and the 4D model built on it."""

from .backbone import HunyuanDiT
from .dit4d import DiT4D, TemporalAdapter

__all__ = ["DiT4D", "HunyuanDiT", "TemporalAdapter"]
