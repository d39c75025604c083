"""Scanning and validating objects of the on-disk format (design.md §6 + our ``4d_volume.npz``).

An object folder ``<root>/<obj>/`` holds ``geo_data/4d_sample_new.npz`` (per frame ``frame_XXXX/random_surface``
and ``frame_XXXX/sharp_surface``, float16 ``(N, 6)`` = xyz + normal in [-0.5, 0.5]),
``geo_data/4d_volume.npz`` (per frame ``frame_XXXX/points`` ``(M, 3)`` + ``frame_XXXX/occupancy`` ``(M,)``)
and ``render_cond/frame_XXXX/{000..}.png``. :func:`scan_object` checks an object cheaply (npz headers only,
no decompression) and returns an :class:`ObjectRecord` or raises :class:`BadObjectError` naming the path.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sculpt4d.errors import InputError

SURFACE_FILE = "geo_data/4d_sample_new.npz"
VOLUME_FILE = "geo_data/4d_volume.npz"
RENDER_DIR = "render_cond"
FRAME_RE = re.compile(r"^(frame_\d+)/(random_surface|sharp_surface|points|occupancy)$")


class BadObjectError(InputError):
    """An object folder that cannot be used (missing frame, corrupt npz, wrong shapes)."""


@dataclass(frozen=True)
class ObjectRecord:
    """What the loader needs to know about one valid object."""

    name: str
    path: Path
    frames: tuple[str, ...]  # sorted frame keys, e.g. ("frame_0000", ...)
    num_random: int  # random surface points per frame (the same for every frame)
    num_sharp: int  # sharp-edge points per frame (0 if absent)
    num_views: int  # renders available in every frame (0 when images are not checked)
    num_volume: int  # occupancy queries per frame (0 when the volume is not checked)

    @property
    def num_frames(self) -> int:
        return len(self.frames)


def _npz_shapes(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{key: (shape, dtype)}`` of every array in an npz, read from the .npy headers only."""
    if not path.is_file():
        raise BadObjectError(f"{path}: file not found")
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    if dtype.hasobject:
                        raise BadObjectError(f"{path}: '{info.filename}' holds Python objects (needs pickle)")
                out[info.filename[: -len(".npy")]] = (tuple(shape), dtype)
    except BadObjectError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError) as e:
        raise BadObjectError(f"{path}: corrupt npz ({type(e).__name__}: {e})") from e
    return out


def _frames_of(shapes: dict[str, tuple[tuple[int, ...], np.dtype]], field: str) -> list[str]:
    return sorted({m.group(1) for k in shapes if (m := FRAME_RE.match(k)) and m.group(2) == field})


def scan_object(
    path: str | Path,
    *,
    min_frames: int = 1,
    need_images: bool = True,
    need_volume: bool = False,
) -> ObjectRecord:
    """Validate one object folder and describe it; raises :class:`BadObjectError` naming the bad file."""
    path = Path(path)
    surf_path = path / SURFACE_FILE
    shapes = _npz_shapes(surf_path)
    frames = _frames_of(shapes, "random_surface")
    if not frames:
        raise BadObjectError(f"{surf_path}: no 'frame_XXXX/random_surface' arrays")
    if len(frames) < min_frames:
        raise BadObjectError(f"{surf_path}: {len(frames)} frame(s), the sequence needs {min_frames}")
    n_random: int | None = None
    n_sharp: int | None = None
    for fr in frames:
        for field in ("random_surface", "sharp_surface"):
            key = f"{fr}/{field}"
            if key not in shapes:
                if field == "sharp_surface":
                    n = 0
                else:  # pragma: no cover - frames come from random_surface keys
                    raise BadObjectError(f"{surf_path}: missing '{key}'")
            else:
                shape, _ = shapes[key]
                if len(shape) != 2 or shape[1] != 6 or shape[0] == 0:
                    raise BadObjectError(f"{surf_path}: '{key}' has shape {shape}, expected (N>0, 6)")
                n = shape[0]
            ref = n_random if field == "random_surface" else n_sharp
            if ref is not None and ref != n:
                raise BadObjectError(
                    f"{surf_path}: '{key}' has {n} points but earlier frames have {ref}; consistent 4D sampling "
                    "needs the same point count in every frame (point i = the same surface point)"
                )
            if field == "random_surface":
                n_random = n
            else:
                n_sharp = n
    # frames must be consecutive in index order (a missing frame breaks the time axis)
    idx = [int(f.split("_")[1]) for f in frames]
    missing = sorted(set(range(idx[0], idx[-1] + 1)) - set(idx))
    if missing:
        raise BadObjectError(
            f"{surf_path}: frame(s) {missing[:5]} missing between {frames[0]} and {frames[-1]}"
        )

    num_volume = 0
    if need_volume:
        vol_path = path / VOLUME_FILE
        vshapes = _npz_shapes(vol_path)
        for fr in frames:
            pk, ok = f"{fr}/points", f"{fr}/occupancy"
            if pk not in vshapes or ok not in vshapes:
                raise BadObjectError(f"{vol_path}: missing '{pk}' or '{ok}'")
            (ps, _), (os_, _) = vshapes[pk], vshapes[ok]
            if len(ps) != 2 or ps[1] != 3 or ps[0] == 0 or os_ != (ps[0],):
                raise BadObjectError(f"{vol_path}: '{pk}' {ps} / '{ok}' {os_}, expected (M, 3) / (M,)")
            num_volume = ps[0] if num_volume == 0 else min(num_volume, ps[0])

    num_views = 0
    if need_images:
        for fr in frames:
            d = path / RENDER_DIR / fr
            views = len(list(d.glob("*.png"))) if d.is_dir() else 0
            if views == 0:
                raise BadObjectError(f"{d}: no renders (expected {RENDER_DIR}/{fr}/000.png ...)")
            num_views = views if num_views == 0 else min(num_views, views)
    return ObjectRecord(
        name=path.name,
        path=path,
        frames=tuple(frames),
        num_random=int(n_random or 0),
        num_sharp=int(n_sharp or 0),
        num_views=num_views,
        num_volume=num_volume,
    )


def list_object_dirs(
    roots: str | Path | Sequence[str | Path], list_file: str | Path | None = None
) -> list[Path]:
    """Object folders under ``roots`` (those with a ``geo_data`` folder), or those named in ``list_file``.

    ``list_file`` (the original release's ``train_data_list``): one object path per line, relative paths
    resolved against the first root.
    """
    if isinstance(roots, str | Path):
        roots = [roots]
    roots = [Path(r) for r in roots]
    if list_file is not None:
        lines = [ln.strip() for ln in Path(list_file).read_text().splitlines()]
        base = roots[0] if roots else Path(".")
        return [
            p if (p := Path(ln)).is_absolute() else base / p for ln in lines if ln and not ln.startswith("#")
        ]
    out: list[Path] = []
    for root in roots:
        if not root.is_dir():
            raise InputError(
                f"dataset root '{root}' does not exist (make it with `make data-tiny` or set data.root)"
            )
        out.extend(sorted(p for p in root.iterdir() if p.is_dir() and (p / "geo_data").is_dir()))
    return out


def split_by_object(
    names: Iterable[str], val_fraction: float = 0.05, num_val: int | None = None, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Deterministic train/val split by object name: rank names by ``sha1(seed:name)``, the first k are val.

    Independent of listing order and of the machine; ``k = num_val`` or ``round(val_fraction * n)``, at least 1
    when there are >= 2 objects and a non-zero fraction was asked for.
    """
    names = sorted(set(names))
    n = len(names)
    if num_val is None:
        num_val = round(val_fraction * n)
        if val_fraction > 0 and n >= 2:
            num_val = max(1, num_val)
    num_val = min(int(num_val), max(n - 1, 0))
    ranked = sorted(names, key=lambda s: hashlib.sha1(f"{seed}:{s}".encode()).hexdigest())
    val = set(ranked[:num_val])
    return [s for s in names if s not in val], [s for s in names if s in val]
