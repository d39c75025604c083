"""Check a state dict against a module: infer the config its shapes imply, load it with errors that name the keys."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sculpt4d.errors import CheckpointError

_SHOWN = 5  # keys listed per category in error messages


def _prefix_of(sd: Mapping[str, Any], suffix: str) -> str | None:
    for k in sd:
        if k.endswith(suffix) and (k == suffix or k[: -len(suffix)].endswith(".")):
            return k[: -len(suffix)]
    return None


def infer_dit_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``HunyuanDiT`` constructor arguments implied by a state dict's shapes (design.md §H2.4); {} if not a DiT."""
    p = _prefix_of(sd, "x_embedder.weight")
    if p is None:
        return {}
    g = lambda name: sd.get(p + name)  # noqa: E731
    hidden, in_ch = g("x_embedder.weight").shape
    blocks = {int(m.group(1)) for k in sd if (m := re.match(re.escape(p) + r"blocks\.(\d+)\.", k))}
    cfg: dict[str, Any] = {"in_channels": int(in_ch), "hidden_size": int(hidden), "depth": len(blocks)}
    if (w := g("blocks.0.attn2.to_k.weight")) is not None:
        cfg["context_dim"] = int(w.shape[1])
    qn = g("blocks.0.attn1.q_norm.weight")
    cfg["qk_norm"] = qn is not None
    if qn is not None:
        cfg["num_heads"] = int(hidden) // int(qn.shape[0])
        cfg["qk_norm_type"] = "layer" if g("blocks.0.attn1.q_norm.bias") is not None else "rms"
    cfg["qkv_bias"] = g("blocks.0.attn1.to_q.bias") is not None
    gates = [k for k in sd if k.startswith(p) and k.endswith("moe.gate.weight")]
    cfg["num_moe_layers"] = len(gates)
    if gates:
        cfg["num_experts"] = int(sd[gates[0]].shape[0])
    if (w := g("blocks.0.mlp.fc1.weight")) is not None:
        cfg["mlp_ratio"] = int(w.shape[0]) // int(hidden)
    return cfg


def infer_vae_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``ShapeVAE`` constructor arguments implied by a state dict's shapes (design.md §H1.6); {} if not a VAE."""
    p = _prefix_of(sd, "post_kl.weight")
    if p is None:
        return {}
    g = lambda name: sd.get(p + name)  # noqa: E731
    width, embed = g("post_kl.weight").shape
    count = lambda pat: len({m.group(1) for k in sd if (m := re.match(re.escape(p) + pat, k))})  # noqa: E731
    cfg: dict[str, Any] = {
        "embed_dim": int(embed),
        "width": int(width),
        "num_decoder_layers": count(r"transformer\.resblocks\.(\d+)\."),
    }
    if g("encoder.input_proj.weight") is not None:
        cfg["num_encoder_layers"] = count(r"encoder\.self_attn\.resblocks\.(\d+)\.")
    qn = g("transformer.resblocks.0.attn.attention.q_norm.weight")
    cfg["qk_norm"] = qn is not None
    if qn is not None:
        cfg["heads"] = int(width) // int(qn.shape[0])
    cfg["qkv_bias"] = g("transformer.resblocks.0.attn.c_qkv.bias") is not None
    if (w := g("geo_decoder.query_proj.weight")) is not None:
        cfg["num_freqs"] = (int(w.shape[1]) - 3) // 6
        if (e := g("encoder.input_proj.weight")) is not None:
            cfg["point_feats"] = int(e.shape[1]) - int(w.shape[1])
    if (w := g("geo_decoder.cross_attn_decoder.mlp.c_fc.weight")) is not None:
        cfg["geo_decoder_mlp_expand_ratio"] = int(w.shape[0]) // int(width)
    cfg["geo_decoder_ln_post"] = g("geo_decoder.ln_post.weight") is not None
    return cfg


def infer_dinov2_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """DINOv2 sizes (``conditioner.dinov2``) implied by a state dict's shapes; {} if not DINOv2."""
    p = _prefix_of(sd, "embeddings.patch_embeddings.projection.weight")
    if p is None:
        return {}
    w = sd[p + "embeddings.patch_embeddings.projection.weight"]
    layers = {m.group(1) for k in sd if (m := re.match(re.escape(p) + r"encoder\.layer\.(\d+)\.", k))}
    cfg: dict[str, Any] = {
        "hidden_size": int(w.shape[0]),
        "patch_size": int(w.shape[-1]),
        "num_hidden_layers": len(layers),
    }
    if (pe := sd.get(p + "embeddings.position_embeddings")) is not None:
        side = int(round((pe.shape[1] - 1) ** 0.5))
        cfg["image_size"] = side * cfg["patch_size"]
    return cfg


def _config_hint(sd: Mapping[str, torch.Tensor]) -> str:
    for fn, what in (
        (infer_dit_config, "a DiT"),
        (infer_vae_config, "a ShapeVAE"),
        (infer_dinov2_config, "DINOv2"),
    ):
        cfg = fn(sd)
        if cfg:
            args = ", ".join(f"{k}={v}" for k, v in cfg.items())
            return f" The checkpoint looks like {what} with {args} ({fn.__name__}); set these in the model config."
    return ""


# ------------------------------------------------------------------------------------------------ load into
def load_into(
    module: nn.Module, sd: Mapping[str, torch.Tensor], strict: bool = True, name: str = "model"
) -> tuple[list[str], list[str]]:
    """``module.load_state_dict(sd)`` with a readable :class:`CheckpointError` naming the problem keys.

    Shape mismatches always fail (checked before anything is copied) and suggest the config the
    checkpoint implies; missing/unexpected keys fail when ``strict`` (after the module's own load hooks,
    e.g. the conditioner's key remapping, have run; the module may then be partially loaded).
    Returns ``(missing, unexpected)``.
    """
    own = module.state_dict()
    bad = [
        (k, tuple(v.shape), tuple(own[k].shape))
        for k, v in sd.items()
        if k in own and v.shape != own[k].shape
    ]
    if bad:
        shown = "; ".join(f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in bad[:_SHOWN])
        raise CheckpointError(
            f"{name}: {len(bad)} tensors have the wrong shape ({shown}"
            f"{'; ...' if len(bad) > _SHOWN else ''}).{_config_hint(sd)}"
        )
    try:
        res = module.load_state_dict(dict(sd), strict=False)
    except RuntimeError as e:  # size mismatches on keys renamed by load hooks
        raise CheckpointError(f"{name}: {str(e).strip()}{_config_hint(sd)}") from e
    missing, unexpected = list(res.missing_keys), list(res.unexpected_keys)
    if strict and (missing or unexpected):
        msg = [f"{name}: checkpoint does not match the model:"]
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                msg.append(
                    f"{len(keys)} {label} keys ({', '.join(keys[:_SHOWN])}{', ...' if len(keys) > _SHOWN else ''})"
                )
        raise CheckpointError(" ".join(msg) + "." + _config_hint(sd))
    return missing, unexpected
