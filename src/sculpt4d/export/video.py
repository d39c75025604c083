"""Side-by-side input/mesh videos (GIF + MP4), turntable videos and a PNG strip for READMEs.

GIFs are written with imageio's pillow plugin; MP4 (H.264, yuv420p) with imageio-ffmpeg's bundled
ffmpeg. If ffmpeg cannot be found or fails, the MP4 is skipped with a warning and the GIF is still
written. Every file is written atomically.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from PIL import Image

from sculpt4d.errors import InputError
from sculpt4d.export.preview import render_strip, render_turntable
from sculpt4d.utils.io import atomic_path

ImageLike = Any  # PIL.Image | np.ndarray (H,W[,3|4], uint8 or float in [0,1]) | path


def to_rgb(image: ImageLike, size: int) -> np.ndarray:
    """An input frame as uint8 RGB [size, size, 3]: alpha composited on white, letterboxed to a square."""
    if isinstance(image, (str, os.PathLike)):
        image = Image.open(image)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            arr = (np.clip(arr.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
        image = Image.fromarray(arr)
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(canvas, rgba).convert("RGB")
    w, h = rgb.size
    side = max(w, h)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(rgb, ((side - w) // 2, (side - h) // 2))
    return np.asarray(square.resize((size, size), Image.Resampling.LANCZOS))


def write_video(
    frames: Sequence[np.ndarray],
    out_path_gif: str | os.PathLike | None,
    out_path_mp4: str | os.PathLike | None,
    fps: float = 8.0,
) -> dict[str, Path | None]:
    """Write uint8 RGB ``frames`` as a looping GIF and/or an MP4; returns the paths written (None if skipped)."""
    import imageio.v3 as iio

    if len(frames) == 0:
        raise InputError("write_video: no frames")
    written: dict[str, Path | None] = {"gif": None, "mp4": None}
    if out_path_gif is not None:
        with atomic_path(out_path_gif) as tmp:
            iio.imwrite(
                tmp, np.stack(frames), extension=".gif", plugin="pillow", duration=1000.0 / fps, loop=0
            )
        written["gif"] = Path(out_path_gif)
    if out_path_mp4 is not None:
        try:
            import imageio_ffmpeg

            h, w = frames[0].shape[:2]
            with atomic_path(out_path_mp4) as tmp:
                writer = imageio_ffmpeg.write_frames(
                    str(tmp),
                    (w, h),
                    fps=fps,
                    codec="libx264",
                    pix_fmt_out="yuv420p",
                    macro_block_size=16,
                    quality=7,
                    ffmpeg_log_level="error",
                )
                writer.send(None)
                for frame in frames:
                    writer.send(np.ascontiguousarray(frame[..., :3]))
                writer.close()
            written["mp4"] = Path(out_path_mp4)
        except Exception as exc:  # ffmpeg binary missing or failing
            warnings.warn(
                f"MP4 not written ({type(exc).__name__}: {exc}); the GIF is still available", stacklevel=2
            )
    return written


def _pair(input_images: Sequence[ImageLike], meshes: Sequence[trimesh.Trimesh]) -> Sequence[ImageLike]:
    if len(meshes) == 0:
        raise InputError("no meshes to render")
    if len(input_images) < len(meshes):
        raise InputError(
            f"{len(meshes)} meshes but only {len(input_images)} input images; pass one image per mesh"
        )
    return input_images[: len(meshes)]  # the first frames were used for prediction


def strip_frames(
    input_images: Sequence[ImageLike],
    meshes: Sequence[trimesh.Trimesh],
    size: int = 256,
    backend: str = "auto",
    renders: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Per frame: input image (left) beside the mesh rendered from a fixed camera (right), [size, 2*size, 3].

    ``renders``: ``render_strip(meshes, size=size)`` made earlier (the strip image and the video share it)."""
    images = _pair(input_images, meshes)
    renders = render_strip(meshes, size=size, backend=backend) if renders is None else renders
    return [np.concatenate([to_rgb(img, size), r], axis=1) for img, r in zip(images, renders)]


def write_strip_video(
    input_images: Sequence[ImageLike],
    meshes: Sequence[trimesh.Trimesh],
    out_path_gif: str | os.PathLike | None,
    out_path_mp4: str | os.PathLike | None = None,
    fps: float = 8.0,
    size: int = 256,
    backend: str = "auto",
    renders: Sequence[np.ndarray] | None = None,
) -> dict[str, Path | None]:
    """Video with one frame per mesh: the input frame beside the generated mesh (see ``strip_frames``)."""
    frames = strip_frames(input_images, meshes, size, backend, renders)
    return write_video(frames, out_path_gif, out_path_mp4, fps)


def write_turntable_video(
    meshes: trimesh.Trimesh | Sequence[trimesh.Trimesh],
    out_path_gif: str | os.PathLike | None,
    out_path_mp4: str | os.PathLike | None = None,
    n_views: int = 36,
    fps: float = 12.0,
    size: int = 256,
    backend: str = "auto",
) -> dict[str, Path | None]:
    """Turntable video (a sequence plays while the camera circles; see ``render_turntable``)."""
    return write_video(
        render_turntable(meshes, n_views=n_views, size=size, backend=backend), out_path_gif, out_path_mp4, fps
    )


def make_strip_image(
    input_images: Sequence[ImageLike],
    meshes: Sequence[trimesh.Trimesh],
    path: str | os.PathLike,
    max_frames: int = 8,
    size: int = 256,
    backend: str = "auto",
    renders: Sequence[np.ndarray] | None = None,
) -> Path:
    """PNG grid: inputs on the top row, meshes (fixed camera) below; at most ``max_frames`` evenly spaced columns.

    ``renders``: as in :func:`strip_frames`."""
    images = _pair(input_images, meshes)
    T = len(meshes)
    idx = np.unique(np.linspace(0, T - 1, min(T, max_frames)).round().astype(int))
    if renders is None:
        renders = render_strip(meshes, size=size, backend=backend)  # bounds of the whole sequence
    top = np.concatenate([to_rgb(images[i], size) for i in idx], axis=1)
    bottom = np.concatenate([renders[i] for i in idx], axis=1)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate([top, bottom], axis=0)).save(tmp, format="PNG")
    return path
