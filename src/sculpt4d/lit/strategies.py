"""Distributed strategy factories for Hydra nodes (``conf/trainer/strategy/*.yaml``).

FSDP's wrap and activation-checkpointing policies take module classes, which YAML cannot name directly;
:func:`fsdp_strategy` resolves dotted class paths. FSDP and DeepSpeed need CUDA GPUs: Lightning refuses
them on CPU (use ``trainer/strategy=ddp`` there).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any


def _classes(paths: Sequence[str] | None) -> set[type] | None:
    if not paths:
        return None
    out = set()
    for p in paths:
        mod, _, name = str(p).rpartition(".")
        out.add(getattr(importlib.import_module(mod), name))
    return out


def fsdp_strategy(
    wrap_modules: Sequence[str] | None = None,
    checkpoint_modules: Sequence[str] | None = None,
    sharding_strategy: str = "FULL_SHARD",
    state_dict_type: str = "sharded",
    **kwargs: Any,
):
    """``lightning.pytorch.strategies.FSDPStrategy`` wrapping each ``wrap_modules`` class (dotted paths)."""
    from lightning.pytorch.strategies import FSDPStrategy

    return FSDPStrategy(
        auto_wrap_policy=_classes(wrap_modules),
        activation_checkpointing_policy=_classes(checkpoint_modules),
        sharding_strategy=sharding_strategy,
        state_dict_type=state_dict_type,
        **kwargs,
    )
