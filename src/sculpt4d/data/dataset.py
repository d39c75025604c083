"""Sequences of consistent 4D surface samples (+ occupancy queries, + one conditioning view per frame).

An item is addressed by ``(object index, item seed)``; every random choice of the item (start frame,
camera, point subset) comes from ``numpy.random.default_rng(item_seed)``, so the data stream is a pure
function of the seeds (the same with any number of workers, and resumable: see :mod:`.sampler`).

Coordinates: the on-disk format is normalised into [-0.5, 0.5] for the whole sequence; Hunyuan3D's VAE
was trained on shapes normalised into [-0.9999, 0.9999] (``normalize_mesh``), so points and occupancy
queries are scaled by :data:`POINT_SCALE` = 2 · 0.9999 here (and meshes decoded by the VAE live in that
range: divide by ``POINT_SCALE`` to compare with the on-disk ground truth).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from sculpt4d.data.records import RENDER_DIR, SURFACE_FILE, VOLUME_FILE, BadObjectError, ObjectRecord

log = logging.getLogger(__name__)

POINT_SCALE = 2.0 * 0.9999  # on-disk [-0.5, 0.5] -> the VAE's [-0.9999, 0.9999]
OnBad = Literal["skip", "raise"]


def _read_npz_arrays(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an npz, decompressing only those (an object's file holds every frame)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise BadObjectError(f"{path}: missing {missing[:3]}")
            return {k: z[k] for k in keys}
    except BadObjectError:
        raise
    except Exception as e:  # noqa: BLE001 - any read failure makes the object bad
        raise BadObjectError(f"{path}: cannot read ({type(e).__name__}: {e})") from e


class Objects4DDataset(Dataset):
    """Per item: ``sequence_length`` consecutive frames (every ``stride``-th) of one object.

    ``strides`` (optional) draws the stride of each item from a list (those that fit the object), so a
    temporal model sees several frame rates; ``crop="sequence"`` crops every view to the union of its
    frames' alpha boxes (:func:`sculpt4d.utils.images.recenter`), as inference does for such a model;
    ``hue_jitter`` (degrees, 0 = off) turns the hue of an item's images by one angle from U[-h, h]
    (:func:`rotate_hue`), the same for every frame.

    Returns a dict:
      ``surface`` ``[T, P, 7]`` float32 — xyz·POINT_SCALE | unit normal | label (0 random, 1 sharp); the first
      ``pc_size`` rows are random-surface points, then ``pc_sharpedge_size`` sharp ones, **with the same point
      indices in every frame** (consistent sampling: row i is the same surface point over time; with
      ``consistent_sampling=False`` each frame draws its own subset, the ablation without it);
      ``images`` ``[T, 3, S, S]`` in [-1, 1] (if ``load_images``) — the same camera for every frame,
      preprocessed exactly as inference (:func:`sculpt4d.utils.images.preprocess_image`), then resized to
      ``image_size`` when given; ``vol_points`` ``[T, M, 3]`` / ``vol_occ`` ``[T, M]`` (if ``load_volume``);
      ``frame_index`` ``[T]``, ``camera`` (int), ``object`` (str).
    """

    def __init__(
        self,
        records: Sequence[ObjectRecord],
        *,
        sequence_length: int = 8,
        stride: int = 1,
        strides: Sequence[int] | None = None,
        pc_size: int = 40960,
        pc_sharpedge_size: int = 0,
        num_volume_points: int = 4096,
        load_images: bool = True,
        load_volume: bool = False,
        preprocess_size: int = 512,
        border_ratio: float = 0.15,
        crop: str = "frame",
        image_size: int | None = None,
        random_start: bool = True,
        camera: int | None = None,
        cache: bool = False,
        cache_images: bool = False,
        on_bad_object: OnBad = "skip",
        consistent_sampling: bool = True,
        hue_jitter: float = 0.0,
    ) -> None:
        if on_bad_object not in ("skip", "raise"):
            raise ValueError(f"on_bad_object must be 'skip' or 'raise', got {on_bad_object!r}")
        self.records = list(records)
        self.sequence_length = int(sequence_length)
        self.stride = int(stride)
        self.strides = sorted({int(k) for k in strides}) if strides else [self.stride]
        if min(self.strides) < 1:
            raise ValueError(f"strides must be >= 1, got {list(self.strides)}")
        if crop not in ("frame", "sequence"):
            raise ValueError(f"crop must be 'frame' or 'sequence', got {crop!r}")
        self.crop = crop
        self.pc_size = int(pc_size)
        self.pc_sharpedge_size = int(pc_sharpedge_size)
        self.num_volume_points = int(num_volume_points)
        self.load_images = load_images
        self.load_volume = load_volume
        self.preprocess_size = int(preprocess_size)
        self.border_ratio = float(border_ratio)
        self.image_size = int(image_size) if image_size else None
        self.random_start = random_start
        self.camera = camera
        self.cache = cache
        self.cache_images = cache_images
        self.on_bad_object = on_bad_object
        self.consistent_sampling = bool(consistent_sampling)
        if not 0.0 <= hue_jitter <= 180.0:
            raise ValueError(f"hue_jitter must be in [0, 180] degrees, got {hue_jitter}")
        self.hue_jitter = float(hue_jitter)
        self._npz_cache: dict[Path, dict[str, np.ndarray]] = {}
        self._img_cache: OrderedDict[tuple[str, str, int], torch.Tensor] = OrderedDict()
        self._box_cache: dict[tuple[str, int], tuple[int, int, int, int]] = {}
        self._stored_boxes: dict[str, dict] = {}  # object -> its alpha_boxes.json ({} when absent)
        self._bad: set[int] = set()  # per process (each worker keeps its own)

    # ------------------------------------------------------------------ helpers
    @property
    def span(self) -> int:
        """Frames covered by one item (at the smallest stride)."""
        return (self.sequence_length - 1) * min(self.strides) + 1

    def __len__(self) -> int:
        return len(self.records)

    def _arrays(self, path: Path, keys: list[str]) -> dict[str, np.ndarray]:
        """The arrays ``keys`` of the npz at ``path``; with ``cache`` each array is decompressed once per
        process, and only when an item first needs it (a 3D item reads 1 of an object's 16 frames)."""
        if not self.cache:
            return _read_npz_arrays(path, keys)
        cached = self._npz_cache.setdefault(path, {})
        missing = [k for k in keys if k not in cached]
        if missing:
            cached.update(_read_npz_arrays(path, missing))
        return {k: cached[k] for k in keys}

    def _image_path(self, rec: ObjectRecord, frame: str, cam: int) -> Path:
        path = rec.path / RENDER_DIR / frame / f"{cam:03d}.png"
        if not path.is_file():  # fall back to the cam-th png in sorted order
            pngs = sorted((rec.path / RENDER_DIR / frame).glob("*.png"))
            if cam >= len(pngs):
                raise BadObjectError(f"{rec.path / RENDER_DIR / frame}: view {cam} missing")
            path = pngs[cam]
        return path

    def _sequence_box(self, rec: ObjectRecord, cam: int) -> tuple[int, int, int, int]:
        """The union of the alpha boxes of every frame of the object seen from ``cam`` (cached): the crop the
        whole clip shares, matching the targets' one normalisation per sequence. The boxes come from the
        object's ``alpha_boxes.json`` (:mod:`.alpha_boxes`) where it has them, else from the PNGs."""
        key = (rec.name, cam)
        if key not in self._box_cache:
            from sculpt4d.data.alpha_boxes import png_alpha_box, read_alpha_boxes
            from sculpt4d.utils.images import union_box

            if rec.name not in self._stored_boxes:  # one read per object, not per camera
                self._stored_boxes[rec.name] = read_alpha_boxes(rec.path) or {}
            stored = self._stored_boxes[rec.name]
            boxes = []
            for frame in rec.frames:
                box = stored.get(frame, {}).get(f"{cam:03d}.png")
                if box is None:
                    path = self._image_path(rec, frame, cam)
                    try:
                        box = png_alpha_box(path)
                    except Exception as e:  # noqa: BLE001
                        raise BadObjectError(
                            f"{path}: cannot read its alpha box ({type(e).__name__}: {e})"
                        ) from e
                boxes.append(box)
            self._box_cache[key] = union_box(boxes)
        return self._box_cache[key]

    def _image(self, rec: ObjectRecord, frame: str, cam: int) -> torch.Tensor:
        key = (rec.name, frame, cam)
        if self.cache_images and key in self._img_cache:
            return self._img_cache[key]
        from sculpt4d.utils.images import load_image, preprocess_image

        path = self._image_path(rec, frame, cam)
        box = self._sequence_box(rec, cam) if self.crop == "sequence" else None
        try:
            img = preprocess_image(
                load_image(path), size=self.preprocess_size, border_ratio=self.border_ratio, box=box
            )
        except Exception as e:  # noqa: BLE001
            raise BadObjectError(f"{path}: cannot preprocess ({type(e).__name__}: {e})") from e
        if self.image_size and self.image_size != img.shape[-1]:
            img = resize_image(img, self.image_size)
        if self.cache_images:
            self._img_cache[key] = img
        return img

    # ------------------------------------------------------------------ items
    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = (key, key) if isinstance(key, int) else (int(key[0]), int(key[1]))
        n = len(self.records)
        for attempt in range(n):
            i = (index + attempt) % n
            if i in self._bad:
                continue
            try:
                return self.load_item(i, seed)
            except BadObjectError as e:
                if self.on_bad_object == "raise":
                    raise
                self._bad.add(i)
                log.warning("skipping bad object %s: %s", self.records[i].path, e)
        raise BadObjectError(f"every object of the dataset is bad ({n} objects, e.g. {self.records[0].path})")

    def _point_indices(self, rng: np.random.Generator, available: int, size: int, T: int) -> list[np.ndarray]:
        """Per frame, the ``[size]`` row indices into its stored points: one shared draw (consistent
        sampling), or with ``consistent_sampling=False`` one independent draw per frame."""
        first = rng.choice(available, size, replace=available < size)
        if self.consistent_sampling:
            return [first] * T
        return [first] + [rng.choice(available, size, replace=available < size) for _ in range(T - 1)]

    def read_surface(
        self, rec: ObjectRecord, frames: Sequence[str], rng: np.random.Generator
    ) -> torch.Tensor:
        """``surface [T, P, 7]`` of ``frames`` of ``rec``: the stored points' rows drawn with ``rng`` (one draw
        for every frame with consistent sampling), xyz · POINT_SCALE, unit normals, the sharp label."""
        # one index set for every frame: row i is the same surface point in each frame
        idx_r = self._point_indices(rng, rec.num_random, self.pc_size, len(frames))
        parts = [("random_surface", idx_r, 0.0)]
        if self.pc_sharpedge_size > 0:
            if rec.num_sharp == 0:
                raise BadObjectError(
                    f"{rec.path / SURFACE_FILE}: no sharp_surface points but pc_sharpedge_size > 0"
                )
            idx_s = self._point_indices(rng, rec.num_sharp, self.pc_sharpedge_size, len(frames))
            parts.append(("sharp_surface", idx_s, 1.0))
        keys = [f"{fr}/{field}" for fr in frames for field, _, _ in parts]
        arrays = self._arrays(rec.path / SURFACE_FILE, keys)
        surface = []
        for k, fr in enumerate(frames):
            chunks = []
            for field, idx, label in parts:
                a = arrays[f"{fr}/{field}"]
                if a.ndim != 2 or a.shape[1] != 6:
                    raise BadObjectError(f"{rec.path / SURFACE_FILE}: '{fr}/{field}' has shape {a.shape}")
                a = a[idx[k]].astype(np.float32)  # [P_part, 6]
                chunks.append(np.concatenate([a, np.full((len(a), 1), label, np.float32)], axis=1))
            surface.append(np.concatenate(chunks, axis=0))
        surf = torch.from_numpy(np.stack(surface))  # [T, P, 7]
        if not torch.isfinite(surf).all():
            raise BadObjectError(f"{rec.path / SURFACE_FILE}: non-finite values")
        surf[..., :3] *= POINT_SCALE
        normals = surf[..., 3:6]
        surf[..., 3:6] = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        return surf

    def load_item(self, index: int, seed: int) -> dict[str, Any]:
        """The item of object ``index`` drawn with ``seed`` (raises :class:`BadObjectError`)."""
        rec = self.records[index]
        rng = np.random.default_rng(seed)
        if rec.num_frames < self.span:
            raise BadObjectError(f"{rec.path}: {rec.num_frames} frames < {self.span} needed")
        fitting = [k for k in self.strides if (self.sequence_length - 1) * k + 1 <= rec.num_frames]
        stride = int(rng.choice(fitting)) if len(fitting) > 1 else fitting[0]
        max_start = rec.num_frames - ((self.sequence_length - 1) * stride + 1)
        start = int(rng.integers(0, max_start + 1)) if self.random_start else 0
        frames = [rec.frames[start + k * stride] for k in range(self.sequence_length)]

        surf = self.read_surface(rec, frames, rng)  # [T, P, 7]
        item: dict[str, Any] = {
            "surface": surf,
            "frame_index": torch.tensor([start + k * stride for k in range(self.sequence_length)]),
            "object": rec.name,
        }
        if self.load_volume:
            vkeys = [f"{fr}/{f}" for fr in frames for f in ("points", "occupancy")]
            varr = self._arrays(rec.path / VOLUME_FILE, vkeys)
            m = min(varr[f"{fr}/points"].shape[0] for fr in frames)
            vidx = rng.choice(m, self.num_volume_points, replace=m < self.num_volume_points)
            pts = np.stack([varr[f"{fr}/points"][vidx] for fr in frames]).astype(np.float32)  # [T, M, 3]
            occ = np.stack([varr[f"{fr}/occupancy"][vidx] for fr in frames]).astype(np.float32)  # [T, M]
            item["vol_points"] = torch.from_numpy(pts) * POINT_SCALE
            item["vol_occ"] = torch.from_numpy((occ > 0.5).astype(np.float32))
        cam = (
            self.camera
            if self.camera is not None
            else (int(rng.integers(0, rec.num_views)) if rec.num_views else 0)
        )
        item["camera"] = cam
        if self.load_images:
            images = torch.stack([self._image(rec, fr, cam) for fr in frames])  # [T, 3, S, S]
            if self.hue_jitter > 0:
                degrees = float(rng.uniform(-self.hue_jitter, self.hue_jitter))
                images = rotate_hue(images, degrees)  # one rotation for the whole clip
            item["images"] = images
        return item


# RGB -> YIQ (NTSC): Y is the luma, (I, Q) the chroma plane a hue rotation turns
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.5959, -0.2746, -0.3213], [0.2115, -0.5227, 0.3112]], dtype=torch.float64
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def rotate_hue(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate the hue of ``images`` ``[..., 3, H, W]`` (RGB in [-1, 1]) by ``degrees`` in the HSV sense (positive:
    red -> green -> blue), clamped to [-1, 1].

    A rotation of the chroma plane of YIQ: luma and every grey (the white background) stay as they are, so the
    same rotation applied to each frame of a clip keeps the clip consistent.
    """
    a = np.deg2rad(-degrees)  # YIQ's chroma angle runs the other way round from HSV's hue
    spin = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]], dtype=torch.float64
    )
    m = (_YIQ_TO_RGB @ spin @ _RGB_TO_YIQ).to(images.dtype)  # [3, 3]
    out = torch.einsum("ij,...jhw->...ihw", m, images)
    return out.clamp(-1.0, 1.0)


def resize_image(img: torch.Tensor, size: int) -> torch.Tensor:
    """``[3, S, S]`` (or ``[N, 3, S, S]``) in [-1, 1] -> ``size``², the conditioner's own resize.

    :meth:`VideoConditioner.preprocess` resizes square inputs with antialiased bilinear interpolation;
    doing it here (a linear map, so equal up to float rounding) keeps cached images small, and the
    conditioner then skips its resize.
    """
    x = img if img.dim() == 4 else img[None]
    x = torch.nn.functional.interpolate(
        x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return x if img.dim() == 4 else x[0]
