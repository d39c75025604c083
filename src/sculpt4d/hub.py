"""Resolve, read, check and write checkpoints (never executing pickled code).

The code lives in :mod:`sculpt4d.checkpoints`, split by verb (the readable layouts are listed in
:mod:`sculpt4d.checkpoints.read`); this module keeps the public names importable.
"""

from sculpt4d.checkpoints.diagnose import infer_dinov2_config, infer_dit_config, infer_vae_config, load_into
from sculpt4d.checkpoints.keys import StateDict, split_hunyuan_checkpoint, strip_prefixes
from sculpt4d.checkpoints.read import (
    DIR_CANDIDATES,
    PICKLE_SUFFIXES,
    blocked_globals,
    load_state_dict,
    refused_pickle_message,
)
from sculpt4d.checkpoints.resolve import resolve_checkpoint
from sculpt4d.checkpoints.write import parse_size, save_safetensors, save_sharded_bin

__all__ = [
    "DIR_CANDIDATES",
    "PICKLE_SUFFIXES",
    "StateDict",
    "blocked_globals",
    "infer_dinov2_config",
    "infer_dit_config",
    "infer_vae_config",
    "load_into",
    "load_state_dict",
    "parse_size",
    "refused_pickle_message",
    "resolve_checkpoint",
    "save_safetensors",
    "save_sharded_bin",
    "split_hunyuan_checkpoint",
    "strip_prefixes",
]
