"""Data preparation: per-object stages (frames -> render -> sample -> verify) and their orchestration.

The code lives by job: :mod:`~sculpt4d.prep.params` (settings), :mod:`~sculpt4d.prep.stages` (the stages),
:mod:`~sculpt4d.prep.runner` (discovery, shards, resume, process pool), :mod:`~sculpt4d.prep.report`
(failure report, summary) and :mod:`~sculpt4d.prep.meshio` (frame layout, PLY IO); this module gathers
their public names.
"""

from sculpt4d.prep.meshio import frame_dir, list_frames, read_ply, write_ply
from sculpt4d.prep.params import PrepParams, object_seed
from sculpt4d.prep.report import print_summary, write_failure_report
from sculpt4d.prep.runner import (
    DOWNSTREAM,
    GLB_SUFFIXES,
    STAGES,
    clean_partial,
    discover,
    is_done,
    parse_shard,
    process_object,
    run,
    shard_items,
)
from sculpt4d.prep.stages import Progress, stage_frames, stage_render, stage_sample, vertex_colors_of

__all__ = [
    "DOWNSTREAM",
    "GLB_SUFFIXES",
    "STAGES",
    "PrepParams",
    "Progress",
    "clean_partial",
    "discover",
    "frame_dir",
    "is_done",
    "list_frames",
    "object_seed",
    "parse_shard",
    "print_summary",
    "process_object",
    "read_ply",
    "run",
    "shard_items",
    "stage_frames",
    "stage_render",
    "stage_sample",
    "vertex_colors_of",
    "write_failure_report",
    "write_ply",
]
