"""Validation pictures: a strip of meshes (one per frame, fixed camera), inputs above when given."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import trimesh


def _matplotlib_strip(meshes: Sequence[trimesh.Trimesh], size: int) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(meshes))
    fig = plt.figure(figsize=(n * size / 100, size / 100), dpi=100)
    for i, m in enumerate(meshes):
        ax = fig.add_subplot(1, n, i + 1, projection="3d")
        if m is not None and len(m.faces):
            v = np.asarray(m.vertices)
            ax.plot_trisurf(
                v[:, 0], v[:, 2], v[:, 1], triangles=np.asarray(m.faces), linewidth=0, color="0.7"
            )
        ax.set_axis_off()
        for f in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
            f(-1, 1)
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


def save_strip(
    path: str | Path, meshes: Sequence[trimesh.Trimesh], images: Sequence | None = None, size: int = 128
) -> Path:
    """Write a PNG strip: ``images`` (optional, e.g. the conditioning views) on top, mesh renders below."""
    from PIL import Image

    from sculpt4d.utils.io import atomic_path

    path = Path(path)
    if images is not None:
        from sculpt4d.export import make_strip_image

        return make_strip_image(list(images), list(meshes), path, max_frames=len(meshes), size=size)
    try:
        from sculpt4d.export import render_strip

        strip = np.concatenate(render_strip(list(meshes), size=size), axis=1)
    except Exception:  # noqa: BLE001 - no renderer: fall back to matplotlib
        strip = _matplotlib_strip(meshes, size)
    with atomic_path(path) as tmp:
        Image.fromarray(strip).save(tmp, format="PNG")
    return path


def tensor_to_pil(img):
    """``[3, S, S]`` in [-1, 1] -> PIL RGB image."""
    from PIL import Image

    a = ((img.detach().float().cpu().permute(1, 2, 0).numpy() + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    return Image.fromarray(a)
