"""Input image loading and Hunyuan3D-2.1 ``ImageProcessorV2`` preprocessing (design.md §H3), without cv2.

``preprocess_image`` = recentre + white background + resize, numerically as upstream except for the
resampling kernels: upstream uses cv2 (INTER_AREA for the object rescale, INTER_CUBIC for the final
resize); we use Pillow per channel (BOX when shrinking / BILINEAR when enlarging, then BICUBIC). Pillow's
bicubic uses a = −0.5 (cv2: −0.75) and antialiases when shrinking (cv2's cubic does not), so pixels can
differ by a few levels at edges; the geometry (crop box, scale, placement) is identical.

RGB inputs (no alpha): upstream runs ``rembg`` (u2net); we instead segment a plain background
(:func:`segment_foreground`): the background colour is the median of the image border, foreground is
every pixel farther than ``bg_threshold`` (Euclidean, 0–255 units) from it, cleaned by a 3×3 opening,
dropping components smaller than 10% of the largest, and hole filling. Non-uniform borders, an empty
foreground or a foreground covering (almost) the whole image raise :class:`InputError`; pass
``rgb_mode="whole"`` (predict key ``rgb_mode=whole``) to treat the whole RGB image as the object (upstream's behaviour without rembg).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sculpt4d.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
RGBMode = Literal["segment", "whole"]
ImageLike = Image.Image | np.ndarray | str | os.PathLike


def _to_8bit_gray(im: Image.Image) -> Image.Image:
    """16-bit (``I;16*``, ``I``) or float (``F``) grayscale -> ``L`` by rescaling, not clipping.

    Integer data above 255 is taken as 16-bit (``>> 8``); float data in [0, 1] is scaled by 255, larger
    float data is taken as 0–255 or, above 255, as 16-bit.
    """
    a = np.asarray(im).astype(np.float64)
    peak = float(a.max()) if a.size else 0.0
    if im.mode == "F" and peak <= 1.0:
        a = a * 255.0
    elif peak > 255.0:
        a = a / 257.0
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), mode="L")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file fully; returns mode ``RGBA`` (if it has transparency) or ``RGB``.

    EXIF orientation is applied (phone photos come upright); 16-bit and float grayscale are rescaled.
    """
    from PIL import ImageOps

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: image file not found")
    try:
        with Image.open(p) as im:
            im.load()
            im = ImageOps.exif_transpose(im) or im
            if im.mode.startswith("I") or im.mode == "F":
                im = _to_8bit_gray(im)
            has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
            return im.convert("RGBA" if has_alpha else "RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(
            f"{p}: cannot read image ({type(e).__name__}: {e}); expected a PNG/JPEG/WebP file"
        ) from e


def _to_uint8_array(img: Image.Image | np.ndarray) -> np.ndarray:
    """``[H, W, 3|4]`` uint8 from a PIL image or an array (uint8, or float in [0, 1])."""
    if isinstance(img, Image.Image):
        has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
        return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise InputError(f"expected an image array [H, W, 3|4], got shape {a.shape}")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise InputError(f"image arrays must be uint8 or float in [0, 1], got {a.dtype}")
        a = np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    return a


def segment_foreground(
    rgb: np.ndarray, bg_threshold: float = 30.0, border_frac: float = 0.02, min_uniform: float = 0.95
) -> np.ndarray:
    """Foreground mask ``[H, W]`` bool of an object on a plain background (see module doc)."""
    from scipy import ndimage

    h, w = rgb.shape[:2]
    bw = max(1, round(border_frac * min(h, w)))
    x = rgb[..., :3].astype(np.float32)
    border = np.concatenate(
        [x[:bw].reshape(-1, 3), x[-bw:].reshape(-1, 3), x[:, :bw].reshape(-1, 3), x[:, -bw:].reshape(-1, 3)]
    )
    bg = np.median(border, axis=0)  # [3]
    uniform = float((np.linalg.norm(border - bg, axis=1) <= bg_threshold).mean())
    if uniform < min_uniform:
        raise InputError(
            f"RGB image without alpha: its border is not a plain background (only {uniform:.0%} of border "
            f"pixels match the median colour {bg.round().astype(int).tolist()}). Provide an RGBA image with the "
            "object mask in alpha, leave a plain margin around the object, or pass rgb_mode=whole to treat "
            "the whole image as the object."
        )
    fg = np.linalg.norm(x - bg, axis=-1) > bg_threshold  # [H, W]
    fg = ndimage.binary_opening(fg, structure=np.ones((3, 3), bool))
    labels, n = ndimage.label(fg)
    if n > 1:
        sizes = ndimage.sum(fg, labels, index=np.arange(1, n + 1))
        keep = np.flatnonzero(sizes >= 0.1 * sizes.max()) + 1
        fg = np.isin(labels, keep)
    fg = ndimage.binary_fill_holes(fg)
    frac = float(fg.mean())
    if frac == 0.0:
        raise InputError(
            "RGB image without alpha: no object found on the plain background (nothing differs from "
            f"the background colour {bg.round().astype(int).tolist()} by more than bg_threshold={bg_threshold}); "
            "provide an RGBA image, lower bg_threshold, or pass rgb_mode=whole."
        )
    if frac > 0.98:
        raise InputError(
            "RGB image without alpha: the whole image differs from its border colour; provide an "
            "RGBA image, or pass rgb_mode=whole to treat the whole image as the object."
        )
    return fg


def _resize_u8(a: np.ndarray, size_wh: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """Resize each uint8 channel independently (no alpha premultiplication, like cv2)."""
    chans = [
        np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c])).resize(size_wh, resample))
        for c in range(a.shape[-1])
    ]
    return np.stack(chans, axis=-1)


Box = tuple[int, int, int, int]  # alpha bbox rows [r0, r1), cols [c0, c1) (upstream's half-open convention)


def alpha_box(rgba: np.ndarray) -> Box:
    """The alpha bbox of ``[H, W, 4]`` uint8 as ``(r0, r1, c0, c1)``."""
    rows, cols = np.nonzero(rgba[..., 3])
    if rows.size == 0:
        raise InputError(
            "the image's alpha channel is empty (fully transparent): no object to reconstruct; "
            "remove this frame or give it the object's mask in alpha"
        )
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


def union_box(boxes: Sequence[Box]) -> Box:
    """The smallest box holding every box (one crop for a whole sequence)."""
    b = np.asarray(boxes)
    return int(b[:, 0].min()), int(b[:, 1].max()), int(b[:, 2].min()), int(b[:, 3].max())


def recenter(
    rgba: np.ndarray, border_ratio: float = 0.15, box: Box | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Upstream ``ImageProcessorV2.recenter``: ``[H, W, 4]`` uint8 -> (RGB on white ``[S, S, 3]``, mask ``[S, S]``).

    Crops to ``box`` (default: the image's own alpha bbox, half-open ``[min, max)`` as upstream; a sequence
    passes the union of its frames' boxes so that every frame keeps one placement and scale), scales its
    longest side to
    ``int(S · (1 − border_ratio))`` with S = max(H, W), pastes it centred on an S×S canvas and composites
    on white (float32, truncated to uint8 as upstream).
    """
    h, w = rgba.shape[:2]
    s = max(h, w)
    r0, r1, c0, c1 = alpha_box(rgba) if box is None else box
    bh, bw = int(r1 - r0), int(c1 - c0)
    if bh == 0 or bw == 0:
        raise InputError("the object in the image is too thin (alpha bbox is a single row or column)")
    desired = int(s * (1 - border_ratio))
    scale = desired / max(bh, bw)
    h2, w2 = int(bh * scale), int(bw * scale)
    crop = rgba[r0:r1, c0:c1]
    resample = Image.Resampling.BOX if (h2 <= bh and w2 <= bw) else Image.Resampling.BILINEAR
    canvas = np.zeros((s, s, 4), np.uint8)
    y0, x0 = (s - h2) // 2, (s - w2) // 2
    canvas[y0 : y0 + h2, x0 : x0 + w2] = _resize_u8(crop, (w2, h2), resample)
    m = canvas[..., 3:].astype(np.float32) / 255.0
    rgb = canvas[..., :3] * m + np.float32(255.0) * (1.0 - m)
    return rgb.clip(0, 255).astype(np.uint8), (m[..., 0] * 255.0).clip(0, 255).astype(np.uint8)


def to_rgba(img: ImageLike, rgb_mode: RGBMode = "segment", bg_threshold: float = 30.0) -> np.ndarray:
    """``[H, W, 4]`` uint8: alpha kept, or made by segmentation (``segment``) / all-opaque (``whole``)."""
    if isinstance(img, str | os.PathLike):
        img = load_image(img)
    a = _to_uint8_array(img)
    if a.shape[-1] == 4:
        return a
    if rgb_mode == "whole":
        alpha = np.full(a.shape[:2], 255, np.uint8)
    elif rgb_mode == "segment":
        alpha = segment_foreground(a, bg_threshold).astype(np.uint8) * 255
    else:
        raise ValueError(f"rgb_mode must be 'segment' or 'whole', got {rgb_mode!r}")
    return np.concatenate([a, alpha[..., None]], axis=-1)


def preprocess_image(
    img: ImageLike,
    size: int = 512,
    border_ratio: float = 0.15,
    rgb_mode: RGBMode = "segment",
    bg_threshold: float = 30.0,
    box: Box | None = None,
) -> torch.Tensor:
    """Image (RGBA recommended) -> recentred, white background, ``[3, size, size]`` float32 in [-1, 1]."""
    rgb, _ = recenter(to_rgba(img, rgb_mode, bg_threshold), border_ratio, box)
    if rgb.shape[0] != size:
        rgb = _resize_u8(rgb, (size, size), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.ascontiguousarray(rgb)).float() / 255.0 * 2.0 - 1.0  # [S, S, 3]
    return x.permute(2, 0, 1).contiguous()


@contextlib.contextmanager
def _named(name: str) -> Iterator[None]:
    """Prefix an :class:`InputError` raised inside with ``name`` (the frame's file), once."""
    try:
        yield
    except InputError as e:
        msg = str(e)
        raise InputError(msg if msg.startswith(name) else f"{name}: {msg}") from None


def preprocess_images(
    images: Sequence[ImageLike],
    crop: str = "frame",
    rgb_mode: RGBMode = "segment",
    bg_threshold: float = 30.0,
    names: Sequence[str] | None = None,
    **kwargs,
) -> torch.Tensor:
    """A frame sequence -> ``[T, 3, size, size]``; ``crop="sequence"`` crops every frame to the union of the
    frames' alpha boxes (the object keeps its motion in the image), ``"frame"`` each to its own box.

    Every frame is read and masked before any is resized, so a bad frame fails early; its error starts with
    its name (``names``, default ``frame i``)."""
    if crop not in ("frame", "sequence"):
        raise InputError(f"preprocess crop must be 'frame' or 'sequence', got {crop!r}")
    names = list(names) if names is not None else [f"frame {i}" for i in range(len(images))]
    rgbas, boxes = [], []
    for name, image in zip(names, images):
        with _named(name):
            rgbas.append(to_rgba(image, rgb_mode, bg_threshold))
            boxes.append(alpha_box(rgbas[-1]))
    shared = union_box(boxes) if crop == "sequence" and boxes else None
    tensors = []
    for name, rgba, box in zip(names, rgbas, boxes):
        with _named(name):
            tensors.append(preprocess_image(rgba, box=shared or box, **kwargs))
    return torch.stack(tensors)
