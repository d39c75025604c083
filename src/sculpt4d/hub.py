"""Resolve, read, check and write checkpoints (never executing pickled code).

The code lives in :mod:`sculpt4d.checkpoints`, split by verb; this module keeps the public names importable.

Readable layouts (a file, or a folder holding one of them):

- sharded ``pytorch_model-0000X-of-0000N.bin`` + ``pytorch_model.bin.index.json`` (the Sculpt4D release),
  or a single ``pytorch_model.bin``;
- Hunyuan3D-2.1 ``model.fp16.ckpt``: ``{"model": DiT, "vae": ShapeVAE, "conditioner": DINOv2}`` -> flat keys
  ``model.* / vae.* / conditioner.*`` (see :func:`split_hunyuan_checkpoint`);
- ``model.safetensors`` (single, or sharded with ``model.safetensors.index.json``);
- Lightning ``*.ckpt`` (``state_dict``; ``_forward_module.`` / ``module.`` prefixes stripped) and DeepSpeed
  ``{"module": ...}`` files.

Pickle-based files are read with ``torch.load(weights_only=True)``. Lightning files often also pickle
harmless Python objects (hyper-parameters, callback states): those classes are replaced by inert stub
classes (nothing is imported or called) and then dropped, so only tensors come out.
"""

from sculpt4d.checkpoints.diagnose import infer_dinov2_config, infer_dit_config, infer_vae_config, load_into
from sculpt4d.checkpoints.keys import StateDict, split_hunyuan_checkpoint, strip_prefixes
from sculpt4d.checkpoints.read import DIR_CANDIDATES, PICKLE_SUFFIXES, load_state_dict
from sculpt4d.checkpoints.resolve import resolve_checkpoint
from sculpt4d.checkpoints.write import parse_size, save_safetensors, save_sharded_bin

__all__ = [
    "DIR_CANDIDATES",
    "PICKLE_SUFFIXES",
    "StateDict",
    "infer_dinov2_config",
    "infer_dit_config",
    "infer_vae_config",
    "load_into",
    "load_state_dict",
    "parse_size",
    "resolve_checkpoint",
    "save_safetensors",
    "save_sharded_bin",
    "split_hunyuan_checkpoint",
    "strip_prefixes",
]
