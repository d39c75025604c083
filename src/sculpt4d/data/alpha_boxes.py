"""The alpha box of every render of an object, stored once beside the renders: ``render_cond/alpha_boxes.json``.

A sequence crop (``crop: sequence``) is the union of the alpha boxes of all the frames of a clip; reading them
from this file costs one small JSON per object instead of decoding every frame's PNG at every cold start of a
training run (16 PNGs per item of the 3D stage). The prep's render stage writes the file; for data prepared
before it existed::

    python -m sculpt4d.data.alpha_boxes data/tiny/train data/tiny/benchmark_200000

Format: ``{"frames": {"frame_0000": {"000.png": [r0, r1, c0, c1], ...}, ...}}`` with the inclusive box of
:func:`sculpt4d.utils.images.alpha_box`. A render missing from the file is read from its PNG.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from sculpt4d.data.records import RENDER_DIR, BadObjectError, list_object_dirs
from sculpt4d.errors import InputError
from sculpt4d.utils.images import Box

ALPHA_BOXES_FILE = "alpha_boxes.json"
FrameBoxes = dict[str, dict[str, Box]]  # frame -> png name -> box


def boxes_file(obj_dir: Path) -> Path:
    return Path(obj_dir) / RENDER_DIR / ALPHA_BOXES_FILE


def render_boxes(images: Sequence[np.ndarray]) -> dict[str, Box]:
    """``{"000.png": box, ...}`` of one frame's ``[H, W, 4]`` uint8 views, named as the render stage names them
    (a view with an empty alpha channel has no box: the loader reads its PNG and reports it)."""
    from sculpt4d.utils.images import alpha_box

    return {f"{i:03d}.png": alpha_box(img) for i, img in enumerate(images) if img[..., 3].any()}


def png_alpha_box(path: Path) -> Box:
    """The alpha box of one render, read from its PNG."""
    from sculpt4d.utils.images import alpha_box, load_image, to_rgba

    return alpha_box(to_rgba(load_image(path)))


def boxes_from_pngs(obj_dir: Path) -> FrameBoxes:
    """The box of every ``render_cond/frame_*/*.png`` of an object, read from the PNGs."""
    out: FrameBoxes = {}
    for frame_dir in sorted((Path(obj_dir) / RENDER_DIR).glob("frame_*")):
        pngs = sorted(frame_dir.glob("*.png"))
        if pngs:
            out[frame_dir.name] = {p.name: png_alpha_box(p) for p in pngs}
    return out


def write_alpha_boxes(obj_dir: Path, boxes: Mapping[str, Mapping[str, Box]]) -> Path:
    """Write ``boxes`` (frame -> png name -> box) to the object's ``alpha_boxes.json`` (atomically)."""
    from sculpt4d.utils.io import write_json

    path = boxes_file(obj_dir)
    payload = {
        "frames": {f: {n: [int(v) for v in b] for n, b in views.items()} for f, views in boxes.items()}
    }
    write_json(path, payload, indent=None)
    return path


def read_alpha_boxes(obj_dir: Path) -> FrameBoxes | None:
    """The object's stored boxes, or None when it has no ``alpha_boxes.json``; a malformed file raises
    :class:`BadObjectError` naming it."""
    path = boxes_file(obj_dir)
    if not path.is_file():
        return None
    try:
        frames = json.loads(path.read_text())["frames"]
        out: FrameBoxes = {}
        for frame, views in frames.items():
            out[frame] = {}
            for name, box in views.items():
                r0, r1, c0, c1 = (int(v) for v in box)
                if not (0 <= r0 <= r1 and 0 <= c0 <= c1):
                    raise ValueError(f"{frame}/{name}: box {box} is not (r0 <= r1, c0 <= c1)")
                out[frame][name] = (r0, r1, c0, c1)
        return out
    except Exception as e:  # noqa: BLE001 - any malformation makes the object bad
        raise BadObjectError(f"{path}: cannot read its alpha boxes ({type(e).__name__}: {e})") from e


def _backfill(obj_dir: Path) -> str:
    write_alpha_boxes(obj_dir, boxes_from_pngs(obj_dir))
    return obj_dir.name


def object_dirs(roots: Iterable[Path]) -> list[Path]:
    """The dataset's object folders under the given roots that have renders."""
    return [d for d in list_object_dirs(list(roots)) if (d / RENDER_DIR).is_dir()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write render_cond/alpha_boxes.json for every object under ROOTs."
    )
    parser.add_argument(
        "roots", nargs="+", type=Path, help="folders of object folders (e.g. data/tiny/train)"
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        dirs = object_dirs(args.roots)
    except InputError as e:
        print(f"error: {e}")
        return 2
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        done = list(pool.map(_backfill, dirs, chunksize=8))
    print(f"wrote {ALPHA_BOXES_FILE} for {len(done)} objects")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
