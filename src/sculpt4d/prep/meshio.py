"""The on-disk layout of a prepared object's frames and its PLY mesh IO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from sculpt4d.utils.io import atomic_path


def frame_dir(obj_dir: Path, t: int) -> Path:
    return obj_dir / "render_cond" / f"frame_{t:04d}"


def list_frames(obj_dir: Path) -> list[Path]:
    return sorted(p for p in (obj_dir / "render_cond").glob("frame_*") if p.is_dir())


def write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None) -> None:
    tm = trimesh.Trimesh(vertices, faces, vertex_colors=colors, process=False)
    with atomic_path(path) as tmp:
        tm.export(tmp, file_type="ply", encoding="binary")


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """-> vertices [V,3] f64, faces [F,3] i64, vertex colours [V,4] uint8 | None"""
    tm = trimesh.load(path, process=False, force="mesh")
    colors = None
    if tm.visual.kind == "vertex":
        colors = np.asarray(tm.visual.vertex_colors, dtype=np.uint8)
    return np.asarray(tm.vertices, np.float64), np.asarray(tm.faces, np.int64), colors
