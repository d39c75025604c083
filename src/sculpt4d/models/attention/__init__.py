"""Spatio-temporal block masks per variant and the attention backends that run them."""

from .backends import BACKENDS, choose_backend, sparse_attention
from .masks import VARIANTS, BlockMask4D, build_block_mask

__all__ = ["BACKENDS", "VARIANTS", "BlockMask4D", "build_block_mask", "choose_backend", "sparse_attention"]
