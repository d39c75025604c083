"""Per-frame DINOv2 image conditioner (Hunyuan3D-2.1 ``DinoImageEncoder``, design.md §H3) for image sequences.

``VideoConditioner`` wraps ``transformers.Dinov2Model`` (built from a config: weights come from a checkpoint)
and encodes each frame independently: ``[B, T, 3, H, W]`` in [-1, 1] -> ``[B, T, L, D]`` with
L = 1 + (image_size / patch)² (CLS kept). Preprocessing as upstream: (x+1)/2 -> resize shorter side to
``image_size`` (bilinear, antialias; torchvision's tensor ``Resize`` is this exact interpolate call) ->
centre crop -> ImageNet normalisation. The unconditional context for CFG is all zeros.

State-dict compatibility: our keys are ``dinov2.<Dinov2Model keys>``; loading also accepts upstream
``main_image_encoder.model.*`` (Hunyuan ``conditioner`` entry), ``cond_stage_model.main_image_encoder.model.*``
and raw ``Dinov2Model`` keys, with either the transformers 4.x or 5.x attention names (remapped on load).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sculpt4d.checkpoints.keys import (  # noqa: F401  (re-exported: the conditioner's key helpers lived here)
    HUNYUAN_PREFIX,
    OUR_PREFIX,
    conditioner_to_hunyuan_keys,
    hunyuan_to_conditioner_keys,
    installed_dinov2_layout,
    remap_dinov2_keys,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# DINOv2-L/14 as in Hunyuan3D-2.1 (design.md §H3); user config entries override these.
DINOV2_L = dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    patch_size=14,
    image_size=518,
    mlp_ratio=4,
    qkv_bias=True,
    layerscale_value=1.0,
    layer_norm_eps=1e-6,
    use_swiglu_ffn=False,
    hidden_act="gelu",
    drop_path_rate=0.0,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


class VideoConditioner(nn.Module):
    """Frozen (by default) DINOv2 encoder applied to every frame of an image sequence."""

    def __init__(
        self,
        dinov2: Mapping[str, Any] | None = None,
        image_size: int = 518,
        use_cls_token: bool = True,
        trainable: bool = False,
        frame_chunk: int | None = None,
    ) -> None:
        super().__init__()
        from transformers import Dinov2Config, Dinov2Model

        user = dict(dinov2 or {})
        if "intermediate_size" in user and "mlp_ratio" not in user:  # Dinov2Config sizes the MLP by mlp_ratio
            user["mlp_ratio"] = int(user["intermediate_size"]) // int(
                user.get("hidden_size", DINOV2_L["hidden_size"])
            )
        cfg = {**DINOV2_L, "image_size": image_size, **user}
        cfg["intermediate_size"] = int(cfg["mlp_ratio"] * cfg["hidden_size"])
        self.image_size = int(image_size)
        self.use_cls_token = use_cls_token
        self.frame_chunk = frame_chunk
        self.dinov2 = Dinov2Model(Dinov2Config(**cfg))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.trainable = True
        self.set_trainable(trainable)
        self.register_load_state_dict_pre_hook(self._remap_on_load)

    @property
    def hidden_size(self) -> int:
        return int(self.dinov2.config.hidden_size)

    @property
    def num_tokens(self) -> int:
        """L = (CLS) + (image_size / patch)²."""
        n = (self.image_size // int(self.dinov2.config.patch_size)) ** 2
        return n + int(self.use_cls_token)

    def set_trainable(self, trainable: bool) -> None:
        """Freeze (eval mode, no grads; upstream default) or unfreeze the encoder."""
        self.trainable = bool(trainable)
        self.dinov2.requires_grad_(self.trainable)
        if not self.trainable:
            self.dinov2.eval()

    def train(self, mode: bool = True) -> VideoConditioner:
        super().train(mode)
        if not self.trainable:
            self.dinov2.eval()
        return self

    @staticmethod
    def _remap_on_load(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
        """Accept upstream prefixes and transformers 4.x/5.x key names (in place, under ``prefix``)."""
        ours = {k: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(prefix)]}
        local = hunyuan_to_conditioner_keys({k[len(prefix) :]: v for k, v in ours.items()})
        state_dict.update({prefix + k: v for k, v in local.items()})

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [-1, 1] -> normalised ``[N, 3, S, S]`` (float32)."""
        x = (images.float() + 1.0) / 2.0
        h, w = x.shape[-2:]
        s = self.image_size
        short, long = (h, w) if h <= w else (w, h)
        if short != s:
            new_long = int(s * long / short)
            size = (s, new_long) if h <= w else (new_long, s)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        h, w = x.shape[-2:]
        top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
        x = x[..., top : top + s, left : left + s]
        return (x - self.mean) / self.std

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` -> ``[N, L, D]`` last hidden state (after the final LayerNorm)."""
        x = self.preprocess(images)
        dtype = next(self.dinov2.parameters()).dtype
        with torch.set_grad_enabled(torch.is_grad_enabled() and (self.trainable or images.requires_grad)):
            feats = self.dinov2(pixel_values=x.to(dtype)).last_hidden_state  # [N, L, D]
        return feats if self.use_cls_token else feats[:, 1:]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, H, W]`` -> ``[B, T, L, D]`` (or ``[B, 3, H, W]`` -> ``[B, L, D]``)."""
        if images.ndim == 4:
            return self.encode(images)
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"expected images [B, T, 3, H, W] or [B, 3, H, W], got {tuple(images.shape)}")
        b, t = images.shape[:2]
        flat = images.reshape(b * t, *images.shape[2:])  # [B*T, 3, H, W]
        chunk = self.frame_chunk or flat.shape[0]
        feats = torch.cat([self.encode(flat[i : i + chunk]) for i in range(0, flat.shape[0], chunk)])
        return feats.reshape(b, t, *feats.shape[1:])

    @staticmethod
    def unconditional(feats: torch.Tensor) -> torch.Tensor:
        """The CFG null context: zeros of the same shape (upstream, not a null-image encoding)."""
        return torch.zeros_like(feats)
