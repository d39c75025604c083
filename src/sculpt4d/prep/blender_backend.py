"""Blender backend for animated GLB -> per-frame meshes (bpy in its own venv, run as a subprocess).

bpy pins numpy<2, so it cannot share the main environment: ``make install-blender`` creates
``.venv-blender`` with bpy 4.5. Override the interpreter with ``SCULPT4D_BLENDER_PYTHON``.
Blender may split/re-order vertices on import, so its topology is not the numpy evaluator's; compare the
two by matching vertices on the rest pose (tests/test_blender_backend.py).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from sculpt4d.errors import InputError, MissingDependencyError
from sculpt4d.prep.gltf_anim import AnimatedMesh

__all__ = ["blender_python", "blender_available", "load_animated_mesh_blender"]

SCRIPT = Path(__file__).with_name("blender_script.py")
REPO_ROOT = Path(__file__).resolve().parents[3]


def blender_python() -> Path:
    """The interpreter that has bpy: $SCULPT4D_BLENDER_PYTHON or <repo>/.venv-blender/bin/python."""
    env = os.environ.get("SCULPT4D_BLENDER_PYTHON")
    if env:
        return Path(env)
    sub = "Scripts/python.exe" if sys.platform == "win32" else "bin/python"
    return REPO_ROOT / ".venv-blender" / sub


@functools.lru_cache(maxsize=4)
def _probe(python: str) -> bool:
    if not Path(python).is_file():
        return False
    try:
        r = subprocess.run([python, "-c", "import bpy"], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def blender_available(python: str | Path | None = None) -> bool:
    """True when the Blender interpreter exists and ``import bpy`` works there (cached)."""
    return _probe(str(python or blender_python()))


def load_animated_mesh_blender(
    path: str | Path,
    num_frames: int = 32,
    clip: str | None = None,
    python: str | Path | None = None,
    timeout: float = 600.0,
) -> AnimatedMesh:
    """Like :func:`~sculpt4d.prep.gltf_anim.load_animated_mesh`, evaluated by Blender's importer + depsgraph.

    Frames are evenly spaced over the chosen clip's action frame range. No colours/UVs are returned.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    py = Path(python) if python else blender_python()
    if not blender_available(py):
        raise MissingDependencyError(
            "bpy", "The Blender prep backend", alternative="the numpy evaluator (sculpt4d.prep.gltf_anim)",
            hint="make install-blender (or set SCULPT4D_BLENDER_PYTHON)",
        )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "frames.npz"
        cmd = [
            str(py),
            str(SCRIPT),
            "--input",
            str(path.resolve()),
            "--num-frames",
            str(num_frames),
            "--out",
            str(out),
        ]
        if clip is not None:
            cmd += ["--clip", str(clip)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise InputError(f"{path}: Blender did not finish within {timeout:.0f} s") from None
        if r.returncode != 0 or not out.is_file():
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-8:])
            raise InputError(f"{path}: Blender could not evaluate the animation:\n{tail}")
        with np.load(out, allow_pickle=False) as z:
            return AnimatedMesh(
                vertices=z["vertices"].astype(np.float32),
                faces=z["faces"].astype(np.int64),
                times=z["times"].astype(np.float64),
                clip_name=str(z["clip"]),
                source=str(path),
                extras=dict(backend="blender", frames=z["frames"].tolist(), objects=z["objects"].tolist()),
            )
