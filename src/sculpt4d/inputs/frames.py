"""One frame sequence from any input: a folder of frames, a video, a zip of frames, or a list of files.

Every source is reduced to the ``sequence_length`` frames the model sees (every ``frame_stride``-th
frame, or for videos a ``video_fps`` / ``start`` / ``end`` choice), read lazily, checked (one size, an
object in every frame) and given a mask by ``matting.remove_background``.
Every problem is one :class:`InputError` sentence naming the file.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sculpt4d.errors import InputError
from sculpt4d.inputs import matting, video_decode
from sculpt4d.utils.images import IMAGE_SUFFIXES

ZIP_SUFFIXES = (".zip",)


@dataclass(frozen=True)
class Limits:
    """Caps that keep a bad upload from exhausting the machine."""

    max_files: int = 5000  # images in a folder / zip / list
    max_pixels: int = 4096 * 4096  # per frame
    max_video_seconds: float = 600.0  # of video decoded (from start to the last frame used)
    max_bytes: int = 2 * 1024**3  # one file, or a zip's uncompressed images


@dataclass
class Frames:
    """The frames the model sees (RGBA, mask in alpha), where each came from and how it was masked."""

    images: list[Image.Image]
    names: list[str]
    source: str
    methods: list[str] = field(default_factory=list)

    def save(self, folder: Path) -> list[Path]:
        """``folder/frame_XXXX.png`` (RGBA): exactly what the model was given."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"frame_{t:04d}.png" for t in range(len(self.images))]
        for img, p in zip(self.images, paths):
            img.save(p)
        return paths


def natural_key(name: str) -> list:
    """``frame_2`` before ``frame_10``."""
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", name)]


def select(count: int, sequence_length: int, stride: int, what: str) -> list[int]:
    """Indices ``0, stride, …`` of ``sequence_length`` frames out of ``count``; too few is an error."""
    if stride < 1:
        raise InputError(f"frame_stride must be >= 1, got {stride}")
    need = (sequence_length - 1) * stride + 1
    if count < need:
        hint = f"pass sequence_length={max(1, (count - 1) // stride + 1)}"
        if stride > 1:
            hint += f" or frame_stride={max(1, (count - 1) // max(sequence_length - 1, 1))}"
        raise InputError(
            f"{what}: {count} image(s) found but the model needs {need} "
            f"(sequence_length={sequence_length} every frame_stride={stride}); {hint}"
        )
    return list(range(0, need, stride))


def video_indices(
    info: video_decode.VideoInfo,
    sequence_length: int,
    stride: int,
    video_fps: float | None,
    end: float | None,
    start: float,
    name: str,
) -> list[int]:
    """Frames of a video: every ``stride``-th; ``video_fps`` resamples to that rate; a clip too short for
    the stride is spread evenly over all its frames (after ``start``, before ``end``)."""
    count = info.num_frames
    if end is not None:
        if end <= start:
            raise InputError(f"{name}: end={end} must be after start={start}")
        count = min(count, int(round((end - start) * info.fps)))
    if video_fps is not None:
        if video_fps <= 0:
            raise InputError(f"video_fps must be > 0, got {video_fps}")
        step = info.fps / float(video_fps)
        idx = [int(round(k * step)) for k in range(sequence_length)]
        if idx[-1] >= count:
            raise InputError(
                f"{name}: {sequence_length} frames at video_fps={video_fps} need {idx[-1] / info.fps:.1f} s "
                f"but the video has {count / info.fps:.1f} s (after start/end); lower video_fps"
            )
    elif count >= (sequence_length - 1) * stride + 1:
        idx = select(count, sequence_length, stride, name)
    elif count >= sequence_length:
        idx = [int(round(x)) for x in np.linspace(0, count - 1, sequence_length)]
    else:
        raise InputError(f"{name}: the video has {count} frame(s) but the model needs {sequence_length}")
    return idx


def _open_image(data: bytes | Path, name: str, limits: Limits) -> Image.Image:
    try:
        im = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        if im.width * im.height > limits.max_pixels:
            raise InputError(
                f"{name}: {im.width}×{im.height} pixels is over the {limits.max_pixels:,}-pixel limit; downscale it"
            )
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(
            f"{name}: not a readable image ({type(e).__name__}); expected PNG/JPEG/WebP frames"
        ) from e
    return im


def _from_files(files: list[Path], sequence_length: int, stride: int, what: str, limits: Limits):
    if not files:
        raise InputError(f"{what}: no images found (expected {', '.join(IMAGE_SUFFIXES)} files)")
    if len(files) > limits.max_files:
        raise InputError(f"{what}: {len(files)} images is over the {limits.max_files}-frame limit")
    files = sorted(files, key=lambda p: natural_key(p.name))
    chosen = [files[i] for i in select(len(files), sequence_length, stride, what)]
    for f in chosen:
        if f.stat().st_size > limits.max_bytes:
            raise InputError(f"{f.name}: {f.stat().st_size / 2**20:.0f} MiB is over the file-size limit")
    return [_open_image(f, f.name, limits) for f in chosen], [str(f) for f in chosen]


def _from_zip(path: Path, sequence_length: int, stride: int, limits: Limits):
    try:
        with zipfile.ZipFile(path) as zf:
            entries = [
                e for e in zf.infolist()
                if not e.is_dir() and Path(e.filename).suffix.lower() in IMAGE_SUFFIXES
                and not Path(e.filename).name.startswith(".") and "__MACOSX" not in e.filename
            ]  # fmt: skip
            if not entries:
                raise InputError(
                    f"{path.name}: the zip holds no images (expected {', '.join(IMAGE_SUFFIXES)} files)"
                )
            if len(entries) > limits.max_files:
                raise InputError(
                    f"{path.name}: {len(entries)} images is over the {limits.max_files}-frame limit"
                )
            entries.sort(key=lambda e: natural_key(e.filename))
            chosen = [entries[i] for i in select(len(entries), sequence_length, stride, path.name)]
            if sum(e.file_size for e in chosen) > limits.max_bytes:
                raise InputError(
                    f"{path.name}: the frames unpack to more than {limits.max_bytes / 2**20:.0f} MiB"
                )
            names = [f"{path.name}/{e.filename}" for e in chosen]
            return [_open_image(zf.read(e), n, limits) for e, n in zip(chosen, names)], names
    except zipfile.BadZipFile as e:
        raise InputError(f"{path.name}: not a valid zip file ({e})") from e


def _from_video(
    path: Path, sequence_length: int, stride: int, limits: Limits,
    video_fps: float | None, start: float | None, end: float | None,
):  # fmt: skip
    start = float(start or 0.0)
    info = video_decode.probe(path, start)
    if info.size[0] * info.size[1] > limits.max_pixels:
        raise InputError(
            f"{path.name}: {info.size[0]}×{info.size[1]} video frames are over the {limits.max_pixels:,}-pixel limit"
        )
    idx = video_indices(info, sequence_length, stride, video_fps, end, start, path.name)
    span = idx[-1] / info.fps
    if span > limits.max_video_seconds:
        raise InputError(
            f"{path.name}: the frames used span {span:.0f} s of video, over the {limits.max_video_seconds:.0f} s "
            "limit; choose a part with start/end or a higher video_fps"
        )
    images = video_decode.read_frames(path, idx, start)
    return images, [f"{path.name}#{start + i / info.fps:.3f}s" for i in idx]


def classify(path: Path) -> str:
    """``folder`` | ``video`` | ``zip`` | ``image`` for an existing path; anything else is an error."""
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix in video_decode.VIDEO_SUFFIXES:
        return "video"
    if suffix in ZIP_SUFFIXES:
        return "zip"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    raise InputError(
        f"{path.name}: not a supported input; give a folder of frames, a video "
        f"({', '.join(video_decode.VIDEO_SUFFIXES)}), a .zip of frames or several image files"
    )


def resolve(spec: str | Path, data_dir: str | Path = "data") -> Path:
    """A path as given, else under ``data/``; a miss names both places and the bundled demos."""
    for candidate in (Path(spec), Path(data_dir) / spec):
        if candidate.exists():
            return candidate
    from sculpt4d.pipeline import resolve_input_dir

    resolve_input_dir(spec, data_dir)  # raises the folder-not-found message listing the demos
    raise InputError(f"input '{spec}' does not exist")


def check_frames(images: list[Image.Image], names: list[str]) -> None:
    """Every frame the same size."""
    for img, name in zip(images[1:], names[1:]):
        if img.size != images[0].size:
            raise InputError(
                f"{Path(name).name} is {img.width}×{img.height} but {Path(names[0]).name} is "
                f"{images[0].width}×{images[0].height}: all frames must have the same size"
            )


def load_frames(
    spec: str | Path | Sequence[str | Path],
    sequence_length: int,
    frame_stride: int = 1,
    *,
    data_dir: str | Path = "data",
    remove_background: str = "auto",
    video_fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    limits: Limits | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Frames:
    """The ``sequence_length`` masked frames of any input (see module doc)."""
    limits = limits or Limits()
    if isinstance(spec, str | Path):
        paths = [resolve(spec, data_dir)]
    else:
        paths = [resolve(s, data_dir) for s in spec]
        if not paths:
            raise InputError("no input given: upload frames, a zip or a video")
    kinds = [classify(p) for p in paths]
    if len(paths) > 1 and set(kinds) != {"image"}:
        odd = next(p for p, k in zip(paths, kinds) if k != "image")
        raise InputError(f"{odd.name}: several files must all be images (or give one video / zip / folder)")
    path, kind = paths[0], kinds[0]
    source = str(path) if len(paths) == 1 else f"{len(paths)} files in {path.parent}"
    if kind == "image" and len(paths) == 1:
        raise InputError(
            f"{path.name}: a single frame, but the model needs a sequence of {sequence_length}; give a folder, "
            "a zip, a video or several frames"
        )
    if kind == "folder":
        files = [
            p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        ]
        images, names = _from_files(files, sequence_length, frame_stride, str(path), limits)
    elif kind == "image":
        images, names = _from_files(paths, sequence_length, frame_stride, source, limits)
    elif kind == "zip":
        images, names = _from_zip(path, sequence_length, frame_stride, limits)
    else:
        images, names = _from_video(path, sequence_length, frame_stride, limits, video_fps, start, end)
    check_frames(images, names)
    out = Frames(images=[], names=names, source=source)
    for t, (img, name) in enumerate(zip(images, names)):
        masked, method = matting.remove_background(img, remove_background, Path(name).name)  # type: ignore[arg-type]
        out.images.append(masked)
        out.methods.append(method)
        if progress is not None:
            progress("reading frames", t + 1, len(images))
    return out
