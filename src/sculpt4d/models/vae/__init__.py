"""ShapeVAE (Hunyuan3D-2.1 layout), point sampling, volume decoding and surface extraction."""

from .attention import (
    CrossAttention,
    ResidualAttentionBlock,
    ResidualCrossAttentionBlock,
    SelfAttention,
    Transformer,
)
from .decoder import GeometryDecoder
from .embedder import FourierEmbedder
from .encoder import PointCrossAttentionEncoder, QuerySelection
from .fps import farthest_point_sample, fps_count
from .model import ShapeVAE
from .posterior import DiagonalGaussian
from .surface import ALGOS, extract_surface, fill_unevaluated
from .volume import (
    QueryFn,
    VolumeResult,
    decode_dense,
    decode_hierarchical,
    grid_axes,
    hierarchy_resolutions,
    near_surface_mask,
)

__all__ = [
    "ALGOS",
    "CrossAttention",
    "DiagonalGaussian",
    "FourierEmbedder",
    "GeometryDecoder",
    "PointCrossAttentionEncoder",
    "QueryFn",
    "QuerySelection",
    "ResidualAttentionBlock",
    "ResidualCrossAttentionBlock",
    "SelfAttention",
    "ShapeVAE",
    "Transformer",
    "VolumeResult",
    "decode_dense",
    "decode_hierarchical",
    "extract_surface",
    "farthest_point_sample",
    "fill_unevaluated",
    "fps_count",
    "grid_axes",
    "hierarchy_resolutions",
    "near_surface_mask",
]
