"""Per-frame Wavefront OBJ output: ``frame_XXXX.obj`` (the original release's format)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import trimesh

from sculpt4d.utils.io import atomic_path


def write_obj(mesh: trimesh.Trimesh, path: str | os.PathLike) -> Path:
    """Write one mesh as OBJ (vertices + faces, vertex colours if present), atomically."""
    path = Path(path)
    text = trimesh.exchange.obj.export_obj(mesh, include_normals=False, include_texture=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_obj_sequence(
    meshes: Sequence[trimesh.Trimesh], out_dir: str | os.PathLike, prefix: str = "frame_", start: int = 0
) -> list[Path]:
    """Write ``out_dir/{prefix}{t:04d}.obj`` for each mesh (t from ``start``); returns the paths.

    Each file is written atomically; other files in ``out_dir`` are left alone.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_obj(m, out_dir / f"{prefix}{start + t:04d}.obj") for t, m in enumerate(meshes)]
