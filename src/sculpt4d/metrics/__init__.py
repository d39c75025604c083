"""Geometry and temporal metrics (design.md §7): Chamfer, F-score, volumetric IoU, temporal jitter."""

from sculpt4d.metrics.distance import (
    WORST_CHAMFER,
    SurfaceSamples,
    chamfer_distance,
    chamfer_fscore_from_samples,
    fscore,
    sample_surface,
)
from sculpt4d.metrics.motion import motion_iou, sequence_occupancy
from sculpt4d.metrics.normalize import apply_normalization, normalize_sequence
from sculpt4d.metrics.occupancy import (
    default_bounds,
    grid_points,
    occupancy,
    occupancy_grid,
    scanline_occupancy,
    volume_iou,
)
from sculpt4d.metrics.sequence_scores import (
    GroundTruth,
    evaluate_sequence,
    prepare_ground_truth,
    score_sequence,
)
from sculpt4d.metrics.temporal import consecutive_chamfers, temporal_jitter

__all__ = [
    "motion_iou",
    "sequence_occupancy",
    "WORST_CHAMFER",
    "GroundTruth",
    "SurfaceSamples",
    "apply_normalization",
    "chamfer_distance",
    "chamfer_fscore_from_samples",
    "consecutive_chamfers",
    "default_bounds",
    "evaluate_sequence",
    "fscore",
    "grid_points",
    "normalize_sequence",
    "occupancy",
    "occupancy_grid",
    "prepare_ground_truth",
    "scanline_occupancy",
    "score_sequence",
    "sample_surface",
    "temporal_jitter",
    "volume_iou",
]
