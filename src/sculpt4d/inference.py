"""Inference defaults that travel with a checkpoint.

An export's ``config.yaml`` carries an ``inference:`` node (written by the training export)::

    inference:
      num_steps: 50            # Euler steps
      guidance_scale: 5.0      # CFG scale
      noise_share_alpha: 1.0   # initial noise shared across frames (0 = independent: the ablation without it)
      noise_scale: 1.0         # the initial noise's standard deviation (< 1: sampling at a lower temperature)
      sampling_shift: 1.0      # > 1: more, smaller Euler steps at the noisy end (training's timestep_shift formula)
      guidance_until: 1.0      # CFG only at the steps with flow time t < this (0 = noise); later steps conditional only
      num_samples: 1           # sequences sampled from K noises; each frame's surface is of their mean occupancy
      octree_resolution: 96    # marching-cubes grid
      decode_min_resolution: 24  # coarsest level of the hierarchical decode (96 -> 24, 48, 96)
      mc_level: 0.0            # iso-level of the occupancy logits the surface is extracted at
      sequence_length: 8       # frames per clip
      frame_stride: 4          # every k-th input frame (the frame rate the model was trained at)
      preprocess: {size: 128, border_ratio: 0.15, crop: sequence}
      attention: {variant: blockmask, ...}

The pipeline, ``predict.py``, the notebook and the web app all read it through :class:`InferenceDefaults`,
so one checkpoint gives one mesh whichever way it is run. Exports written before the node existed still
work: each key is looked up in ``inference:``, then in the export's model node (``octree_resolution``,
``frame_stride``, ``sequence_length``, ``preprocess``, ``num_steps``, ``guidance_scale``; ``attention`` at
the top level), then in a fallback model node (the composed ``conf/model/*.yaml``), then in the defaults
below (the paper model's, ``conf/model/sculpt4d.yaml``). ``conf/predict.yaml`` only overrides: its keys
default to ``null`` = take the checkpoint's.

``python -m sculpt4d.inference <export dir> [key=value ...]`` adds the node to an existing export.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# The keys an override (predict.yaml, the app) may set; ``preprocess`` and ``attention`` belong to the model.
SAMPLING_KEYS = (
    "num_steps",
    "guidance_scale",
    "octree_resolution",
    "decode_min_resolution",
    "mc_level",
    "sequence_length",
    "frame_stride",
    "noise_share_alpha",
    "noise_scale",
    "sampling_shift",
    "guidance_until",
    "num_samples",
)


def _plain(node: Any) -> dict[str, Any]:
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node)


@dataclass
class InferenceDefaults:
    """What a checkpoint is sampled and decoded with unless the caller overrides it."""

    num_steps: int = 50
    guidance_scale: float = 5.0
    octree_resolution: int = 256
    decode_min_resolution: int = 63  # 256 -> 64, 128, 256 (the reference's hierarchy)
    mc_level: float = 0.0  # occupancy logit of the extracted surface (0 = probability 0.5, the reference's)
    sequence_length: int = 8
    frame_stride: int = 1
    noise_share_alpha: float = 1.0
    noise_scale: float = 1.0  # initial noise std: 1 = as trained, < 1 = a lower temperature
    sampling_shift: float = 1.0  # Euler noise levels s -> shift·s / (1 + (shift-1)·s); 1 = upstream's
    guidance_until: float = 1.0  # CFG at the steps with flow time t below it; 1 = every step (upstream's)
    num_samples: int = 1  # K sampled sequences, decoded as their mean occupancy probability
    preprocess: dict[str, Any] = field(default_factory=lambda: {"size": 512, "border_ratio": 0.15})
    attention: dict[str, Any] | None = None

    @classmethod
    def from_config(cls, cfg: Any, fallback_model: Any = None) -> InferenceDefaults:
        """From an export's ``config.yaml`` (or a bare model node): ``inference:`` > the model node's keys >
        ``fallback_model``'s keys > the class defaults."""
        cfg = _plain(cfg)
        model = _plain(cfg.get("model", cfg))
        top = {"attention": cfg.get("attention")}
        sources = [_plain(cfg.get("inference")), model, top, _plain(fallback_model)]
        values: dict[str, Any] = {}
        for f in fields(cls):
            for source in sources:
                if source.get(f.name) is not None:
                    values[f.name] = source[f.name]
                    break
        out = cls(**values)
        return out._typed()

    def _typed(self) -> InferenceDefaults:
        self.num_steps = int(self.num_steps)
        self.guidance_scale = float(self.guidance_scale)
        self.octree_resolution = int(self.octree_resolution)
        self.decode_min_resolution = int(self.decode_min_resolution)
        self.mc_level = float(self.mc_level)
        self.sequence_length = int(self.sequence_length)
        self.frame_stride = int(self.frame_stride)
        self.noise_share_alpha = float(self.noise_share_alpha)
        self.noise_scale = float(self.noise_scale)
        self.sampling_shift = float(self.sampling_shift)
        self.guidance_until = float(self.guidance_until)
        self.num_samples = int(self.num_samples)
        self.preprocess = {"size": 512, "border_ratio": 0.15, **_plain(self.preprocess)}
        self.attention = _plain(self.attention) or None
        return self

    def override(self, **values: Any) -> InferenceDefaults:
        """A copy with every non-``None`` value of ``values`` replacing the checkpoint's."""
        merged = {**asdict(self), **{k: v for k, v in values.items() if v is not None}}
        return type(self)(**merged)._typed()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def conf_model_node(name: str | None) -> dict[str, Any] | None:
    """The model config ``conf/model/<name>.yaml`` shipped with the code, if there is one (the last fallback
    of an export made before ``inference:`` existed, e.g. the tiny model's ``frame_stride``)."""
    from sculpt4d.config import CONF_DIR

    path = Path(CONF_DIR) / "model" / f"{name}.yaml"
    if not name or not path.is_file():
        return None
    node = OmegaConf.load(path)
    return {k: node[k] for k in node if k not in ("vae", "dit", "conditioner")}  # plain inference keys only


def inference_node(model_node: Any, attention: Any = None) -> dict[str, Any]:
    """The ``inference:`` node an export writes: the model node's inference keys (+ the trained attention)."""
    model = _plain(model_node)
    defaults = InferenceDefaults.from_config({"model": model, "attention": _plain(attention) or None})
    return defaults.to_dict()


def add_inference_node(export_dir: str | Path, **overrides: Any) -> dict[str, Any]:
    """Write the ``inference:`` node into ``<export_dir>/config.yaml`` (an export made before it existed).

    The values come from the export itself (see :meth:`InferenceDefaults.from_config`), ``overrides`` win
    (e.g. ``frame_stride=4`` for the shipped tiny model, whose config.yaml did not record it). Returns the node.
    """
    from sculpt4d.errors import CheckpointError
    from sculpt4d.utils.io import atomic_path

    path = Path(export_dir) / "config.yaml"
    if not path.is_file():
        raise CheckpointError(
            f"{export_dir}: no config.yaml (expected an exported sculpt4d checkpoint folder)"
        )
    cfg = OmegaConf.load(path)
    node = InferenceDefaults.from_config(cfg).override(**overrides).to_dict()
    cfg.inference = node
    with atomic_path(path) as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg))
    return node


def main(argv: list[str] | None = None) -> None:
    """``python -m sculpt4d.inference <export dir> [key=value ...]``: add/refresh the ``inference:`` node."""
    import yaml

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(main.__doc__)
        return
    overrides = {}
    for item in argv[1:]:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    node = add_inference_node(argv[0], **overrides)
    print(OmegaConf.to_yaml({"inference": node}), end="")


if __name__ == "__main__":
    main()
