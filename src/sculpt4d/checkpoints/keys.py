"""Every checkpoint-key translation in one place.

- Component prefixes: our export's ``vae.* / model.* / conditioner.*``; the upstream Hunyuan3D / Sculpt4D
  Lightning layout's ``first_stage_model.* / model.* / cond_stage_model.*`` (:data:`UPSTREAM_PREFIXES`,
  :func:`split_components`); the Hunyuan3D-2.1 ``model.fp16.ckpt`` groups (:func:`split_hunyuan_checkpoint`);
  wrapper prefixes (DeepSpeed ``_forward_module.``, DDP ``module.``: :func:`strip_prefixes`).
- DINOv2: upstream ``main_image_encoder.model.*`` -> our ``dinov2.*``, and the transformers 4.x
  (``attention.attention.query``) <-> 5.x (``attention.q_proj``) names (:func:`hunyuan_to_conditioner_keys`,
  :func:`remap_dinov2_keys`); the conditioner applies them in a load hook.
- 3D <-> 4D: a 3D DiT export fills the 4D model's ``backbone.``; a 4D export's ``backbone.*`` gives the
  3D DiT (:func:`is_4d_model_part`, :func:`backbone_part`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, Literal

import torch

from sculpt4d.errors import CheckpointError

StateDict = dict[str, torch.Tensor]
COMPONENTS = ("vae", "model", "conditioner")
HUNYUAN_PREFIX = "main_image_encoder.model."
OUR_PREFIX = "dinov2."
Layout = Literal["v4", "v5"]

# Upstream (Hunyuan3D / Sculpt4D Lightning) prefixes -> our component names.
UPSTREAM_PREFIXES = {
    "first_stage_model.": "vae.",
    "cond_stage_model.main_image_encoder.model.": "conditioner.dinov2.",
    "cond_stage_model.": "conditioner.",
    "model.": "model.",
}


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


def strip_prefixes(
    sd: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = ("_forward_module.", "module.")
) -> StateDict:
    """Remove wrapper prefixes (DeepSpeed ``_forward_module.``, DDP ``module.``) shared by every key."""
    out = dict(sd)
    changed = True
    while changed and out:
        changed = False
        for p in prefixes:
            if all(k.startswith(p) for k in out):
                out = {k[len(p) :]: v for k, v in out.items()}
                changed = True
    return out


def split_hunyuan_checkpoint(sd: Mapping[str, torch.Tensor]) -> dict[str, StateDict]:
    """Flat keys -> ``{"model", "vae", "conditioner"}`` (split at the first dot; Lightning's
    ``first_stage_model.`` / ``cond_stage_model.`` are the VAE / conditioner). Other groups (e.g.
    ``model_ema``) are kept under their own name."""
    alias = {"first_stage_model": "vae", "cond_stage_model": "conditioner"}
    out: dict[str, StateDict] = {"model": {}, "vae": {}, "conditioner": {}}
    for k, v in strip_prefixes(sd).items():
        head, _, rest = k.partition(".")
        if not rest:
            raise CheckpointError(f"checkpoint key '{k}' has no component prefix (model./vae./conditioner.)")
        out.setdefault(alias.get(head, head), {})[rest] = v
    return out


def is_4d_model_part(part: Mapping[str, Any]) -> bool:
    """Whether a ``model.*`` state dict is a 4D model's (``backbone.* / adapter.*``) rather than a 3D DiT's."""
    return any(k.startswith(("backbone.", "adapter.")) for k in part)


def backbone_part(part: Mapping[str, Any]) -> dict[str, Any]:
    """The 3D DiT keys of a ``model.*`` state dict: a 4D export's ``backbone.*`` (prefix removed), else as is."""
    if any(k.startswith("backbone.") for k in part):
        return {k[len("backbone.") :]: v for k, v in part.items() if k.startswith("backbone.")}
    return dict(part)


# transformers 4.x <-> 5.x names inside encoder.layer.{i}.
_V4_TO_V5 = {
    "attention.attention.query.": "attention.q_proj.",
    "attention.attention.key.": "attention.k_proj.",
    "attention.attention.value.": "attention.v_proj.",
    "attention.output.dense.": "attention.o_proj.",
}
_V5_TO_V4 = {v: k for k, v in _V4_TO_V5.items()}
_LAYER_RE = re.compile(r"(^|\.)encoder\.layer\.\d+\.")


def remap_dinov2_keys(
    sd: Mapping[str, Any], to: Layout | Literal["installed"] = "installed"
) -> dict[str, Any]:
    """Rename DINOv2 attention keys between transformers 4.x (``attention.attention.query``,
    ``attention.output.dense``) and 5.x (``attention.{q,k,v,o}_proj``); other keys are unchanged.
    Works on any prefix (``encoder.layer.{i}.`` must appear in the key)."""
    target = installed_dinov2_layout() if to == "installed" else to
    table = _V4_TO_V5 if target == "v5" else _V5_TO_V4
    out: dict[str, Any] = {}
    for key, value in sd.items():
        m = _LAYER_RE.search(key)
        if m:
            head, tail = key[: m.end()], key[m.end() :]
            for old, new in table.items():
                if tail.startswith(old):
                    key = head + new + tail[len(old) :]
                    break
        out[key] = value
    return out


@functools.lru_cache(maxsize=1)
def installed_dinov2_layout() -> Layout:
    """Which attention key names the installed transformers' ``Dinov2Model`` uses."""
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, patch_size=4, image_size=4)
    with torch.device("meta"):
        keys = Dinov2Model(cfg).state_dict().keys()
    return "v5" if any(".attention.q_proj." in k for k in keys) else "v4"


def hunyuan_to_conditioner_keys(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Upstream conditioner keys (``[cond_stage_model.]main_image_encoder.model.*``, 4.x or 5.x) -> ours
    (``dinov2.*``, installed layout). Raw ``Dinov2Model`` keys are accepted too."""
    out: dict[str, Any] = {}
    for key, value in sd.items():
        i = key.find(HUNYUAN_PREFIX)
        if i >= 0:
            key = OUR_PREFIX + key[i + len(HUNYUAN_PREFIX) :]
        elif key.startswith(("embeddings.", "encoder.", "layernorm.")):
            key = OUR_PREFIX + key
        out[key] = value
    return remap_dinov2_keys(out, "installed")


def conditioner_to_hunyuan_keys(sd: Mapping[str, Any], layout: Layout = "v4") -> dict[str, Any]:
    """Our keys (``dinov2.*``) -> upstream ``main_image_encoder.model.*`` with the given layout
    (upstream checkpoints were saved with transformers 4.x: ``v4``)."""
    out = {HUNYUAN_PREFIX + k[len(OUR_PREFIX) :] if k.startswith(OUR_PREFIX) else k: v for k, v in sd.items()}
    return remap_dinov2_keys(out, layout)
