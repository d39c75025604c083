"""Spatio-temporal block masks per variant and the attention backends that run them."""

from .backends import BACKENDS, choose_backend, sparse_attention
from .config import VARIANT_OPTIONS, VARIANTS, AttentionConfig
from .masks import BlockMask4D, build_block_mask

__all__ = [
    "BACKENDS",
    "VARIANTS",
    "VARIANT_OPTIONS",
    "AttentionConfig",
    "BlockMask4D",
    "build_block_mask",
    "choose_backend",
    "sparse_attention",
]
