"""Background removal for RGB frames: keep alpha, built-in plain-background matting, or rembg.

``plain``: the background colour is the median of the image border; a pixel is foreground when it is
farther than ``tolerance`` (Euclidean, 0–255 units) from it; a 3×3 opening removes speckle, the largest
connected component is kept and its holes are filled. Needs nothing downloaded. ``rembg`` runs the
optional ``rembg`` package (u2net) and only with its model file already on disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from sculpt4d.errors import InputError, MissingDependencyError

Mode = Literal["auto", "rembg", "plain", "none"]
MODES = ("auto", "rembg", "plain", "none")
REMBG_MODEL = "u2net"


def border_pixels(rgb: np.ndarray, frac: float = 0.02) -> np.ndarray:
    """``[K, 3]`` float32: the pixels of a band of ``frac`` × the short side along the image border."""
    h, w = rgb.shape[:2]
    b = max(1, round(frac * min(h, w)))
    x = rgb[..., :3].astype(np.float32)
    return np.concatenate(
        [x[:b].reshape(-1, 3), x[-b:].reshape(-1, 3), x[:, :b].reshape(-1, 3), x[:, -b:].reshape(-1, 3)]
    )


def plain_border(rgb: np.ndarray, tolerance: float = 30.0, min_share: float = 0.8) -> tuple[bool, np.ndarray]:
    """Whether at least ``min_share`` of the border lies within ``tolerance`` of its median colour."""
    border = border_pixels(rgb)
    bg = np.median(border, axis=0)  # [3]
    share = float((np.linalg.norm(border - bg, axis=1) <= tolerance).mean())
    return share >= min_share, bg


def plain_matte(rgb: np.ndarray, tolerance: float = 30.0) -> np.ndarray:
    """Alpha ``[H, W]`` uint8 (0 / 255) of the object on a plain background (see module doc)."""
    from scipy import ndimage

    _, bg = plain_border(rgb, tolerance)
    fg = np.linalg.norm(rgb[..., :3].astype(np.float32) - bg, axis=-1) > tolerance  # [H, W]
    fg = ndimage.binary_opening(fg, structure=np.ones((3, 3), bool))
    labels, n = ndimage.label(fg)
    if n > 1:
        sizes = ndimage.sum(fg, labels, index=np.arange(1, n + 1))
        fg = labels == int(np.argmax(sizes)) + 1
    return ndimage.binary_fill_holes(fg).astype(np.uint8) * 255


def rembg_model_path() -> Path:
    """Where rembg looks for its u2net weights (``$U2NET_HOME`` or ``~/.u2net``)."""
    home = os.environ.get("U2NET_HOME", os.path.join(os.path.expanduser("~"), ".u2net"))
    return Path(home) / f"{REMBG_MODEL}.onnx"


def rembg_available() -> bool:
    try:
        import rembg  # noqa: F401
    except ImportError:
        return False
    return rembg_model_path().is_file()


def rembg_matte(rgb: np.ndarray, name: str) -> np.ndarray:
    """Alpha ``[H, W]`` uint8 from rembg; never downloads (a missing model file is an :class:`InputError`)."""
    try:
        import rembg
    except ImportError as e:
        raise MissingDependencyError(
            "rembg", "remove_background=rembg", "remove_background=plain", 'pip install -e ".[rembg]"'
        ) from e
    model = rembg_model_path()
    if not model.is_file():
        raise InputError(
            f"{name}: remove_background=rembg needs the model file {model}, which is missing: run `rembg d {REMBG_MODEL}` "
            "where the internet is reachable and copy the file there (or set U2NET_HOME), or use "
            "remove_background=plain for objects on a plain background"
        )
    session = rembg.new_session(REMBG_MODEL)
    out = rembg.remove(Image.fromarray(rgb[..., :3]), session=session, only_mask=True)
    return np.asarray(out.convert("L"))


def has_alpha(a: np.ndarray) -> bool:
    """An alpha channel that is not fully opaque (an opaque alpha carries no mask)."""
    return a.shape[-1] == 4 and bool((a[..., 3] < 255).any())


def remove_background(
    img: Image.Image, mode: Mode, name: str, tolerance: float = 30.0
) -> tuple[Image.Image, str]:
    """``img`` as RGBA with the object mask in alpha, and the method used (alpha, plain, rembg, none).

    A frame with a (not fully opaque) alpha channel keeps it in every mode; ``none`` makes an RGB frame
    fully opaque (the whole image is the object).
    """
    if mode not in MODES:
        raise InputError(f"remove_background must be one of {', '.join(MODES)} (got '{mode}')")
    a = np.asarray(img.convert("RGBA"))
    if has_alpha(a):  # every mode keeps a given mask
        method, alpha = "alpha", a[..., 3]
    elif mode == "none":
        method, alpha = "none", np.full(a.shape[:2], 255, np.uint8)
    elif mode == "plain" or (mode == "auto" and plain_border(a, tolerance)[0]):
        if not plain_border(a, tolerance)[0]:
            raise InputError(
                f"{name}: remove_background=plain needs a plain background, but the frame's border has "
                "several colours; use remove_background=rembg or give RGBA frames"
            )
        method, alpha = "plain", plain_matte(a, tolerance)
    elif mode == "rembg" or rembg_available():
        method, alpha = "rembg", rembg_matte(a, name)
    else:
        raise InputError(
            f"{name}: the frame has no alpha and its background is not plain, and rembg is not available "
            f"(pip install -e '.[rembg]' and the model file {rembg_model_path()}); give RGBA frames or "
            "frames on a plain background, or pass remove_background=none rgb_mode=whole to use the whole image"
        )
    if not alpha.any():
        what = "fully transparent" if method == "alpha" else f"empty after background removal ({method})"
        raise InputError(f"{name}: the frame is {what}: no object to reconstruct")
    if method in ("plain", "rembg") and alpha.mean() > 0.98 * 255:
        raise InputError(f"{name}: background removal ({method}) kept the whole frame: no background found")
    return Image.fromarray(np.concatenate([a[..., :3], alpha[..., None]], axis=-1), "RGBA"), method
