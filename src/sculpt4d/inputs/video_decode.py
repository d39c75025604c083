"""Lazy video decoding: only the frames a clip needs, read in one pass and stopped after the last.

mp4 / webm / mov / mkv / avi through imageio-ffmpeg (ffmpeg ships inside the wheel); GIF through Pillow
(which keeps its transparency).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from sculpt4d.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".gif")


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    num_frames: int  # estimated from duration × fps for streams
    size: tuple[int, int]  # (W, H)

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps


def _ffmpeg_stream(path: Path, start: float) -> Iterator:
    import imageio_ffmpeg

    params = ["-ss", f"{start:.3f}"] if start > 0 else None
    return imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", input_params=params)


def _corrupt(path: Path, err: Exception) -> InputError:
    detail = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
    return InputError(
        f"{path.name}: cannot decode the video ({detail}); is it a complete mp4/webm/mov/gif file?"
    )


def probe(path: Path, start: float = 0.0) -> VideoInfo:
    """Frame rate, frame count and size without decoding pixels."""
    if path.suffix.lower() == ".gif":
        try:
            with Image.open(path) as im:
                n = getattr(im, "n_frames", 1)
                ms = im.info.get("duration") or 100
                return VideoInfo(
                    fps=1000.0 / ms, num_frames=max(0, n - round(start * 1000.0 / ms)), size=im.size
                )
        except (OSError, ValueError, SyntaxError) as e:
            raise _corrupt(path, e) from e
    gen = _ffmpeg_stream(path, start)
    try:
        meta = next(gen)
    except (OSError, RuntimeError, StopIteration, ValueError) as e:
        raise _corrupt(path, e) from e
    finally:
        gen.close()
    fps = float(meta.get("fps") or 0.0)
    duration = float(meta.get("duration") or 0.0)
    if fps <= 0 or duration <= 0:
        raise InputError(
            f"{path.name}: the video reports no frame rate or duration; re-encode it (e.g. to mp4)"
        )
    return VideoInfo(
        fps=fps, num_frames=max(0, int(round((duration - start) * fps))), size=tuple(meta["size"])
    )


def read_frames(path: Path, indices: list[int], start: float = 0.0) -> list[Image.Image]:
    """The frames at ``indices`` (ascending, counted from ``start`` seconds), decoding no further than the last.

    A stream that ends a frame or two before its reported length repeats its last frame (durations are
    rounded); one that ends earlier is an error.
    """
    wanted = set(indices)
    last = max(indices)
    got: dict[int, Image.Image] = {}
    previous: Image.Image | None = None
    i = -1
    if path.suffix.lower() == ".gif":
        with Image.open(path) as im:
            offset = round(start * 1000.0 / (im.info.get("duration") or 100))
            try:
                for i, frame in enumerate(ImageSequence.Iterator(im)):
                    if i - offset in wanted:
                        got[i - offset] = frame.convert("RGBA")
                    if i - offset >= last:
                        break
            except (OSError, ValueError) as e:
                raise _corrupt(path, e) from e
            i -= offset
    else:
        gen = _ffmpeg_stream(path, start)
        try:
            meta = next(gen)
            w, h = meta["size"]
            for i, buf in enumerate(gen):
                if i in wanted:
                    got[i] = Image.fromarray(np.frombuffer(buf, np.uint8).reshape(h, w, 3).copy())
                    previous = got[i]
                if i >= last:
                    break
        except (OSError, RuntimeError, StopIteration, ValueError) as e:
            raise _corrupt(path, e) from e
        finally:
            gen.close()
    missing = [k for k in indices if k not in got]
    if missing and (i < 0 or last - i > 2 or not got):
        raise InputError(
            f"{path.name}: the video ended after {i + 1} frame(s) but frame {missing[0]} was needed; "
            "pass a smaller sequence_length / frame_stride, or video_fps / start / end"
        )
    previous = got[max(got)]
    return [got.get(k, previous) for k in indices]
