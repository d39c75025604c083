"""Render data/demos/{door,chilun10,angle,box,fatman}/frame_0000..0031.png from procedural assets.

Each demo is one procedural animated GLB (seeds from DEMO_SEED, outside both the training and the
benchmark seed ranges) evaluated at 32 evenly spaced times and rendered as RGBA from one fixed
viewpoint inside the tiny model's training camera range (elevation 20°, azimuth 30°), with the same
renderer as the tiny training data (``embree``: its flat shading; pyrender's lighting is brighter and
the tiny model, trained on embree renders only, does not transfer to it).

    python scripts/make_demos.py [--out data/demos] [--resolution 256]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from sculpt4d.prep.cameras import look_at, spherical_to_eye
from sculpt4d.prep.gltf_anim import load_animated_mesh
from sculpt4d.prep.multiview import Renderer
from sculpt4d.prep.procedural import DEMO_NAMES, generate_asset
from sculpt4d.utils.io import atomic_dir, write_json

DEMO_SEED = 900_000  # train seeds are < 10000, benchmark seeds 100000+
VIEW = {"elevation": 20.0, "azimuth": 30.0, "radius": 2.0, "fov": 40.0}


def sequence_normalise(vertices: np.ndarray) -> np.ndarray:
    """One normalisation for the whole sequence into [-0.5, 0.5] (motion kept).  # [T, V, 3]"""
    lo, hi = vertices.min((0, 1)), vertices.max((0, 1))
    return (vertices - (lo + hi) / 2) / float((hi - lo).max())


def make_demo(
    category: str, name: str, out_root: Path, num_frames: int, resolution: int, seed: int, backend: str
) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        glb = Path(tmp) / f"{name}.glb"
        meta = generate_asset(category, seed, glb)
        anim = load_animated_mesh(glb, num_frames=num_frames)
    verts = sequence_normalise(anim.vertices.astype(np.float64))
    c2w = look_at(spherical_to_eye(VIEW["elevation"], VIEW["azimuth"], VIEW["radius"]), np.zeros(3))[None]
    with (
        Renderer(resolution=resolution, fov=VIEW["fov"], backend=backend) as renderer,
        atomic_dir(out_root / name) as tmp_dir,
    ):
        for t in range(num_frames):
            rgba = renderer.render(verts[t], anim.faces, anim.vertex_colors, c2w)[0]
            Image.fromarray(rgba).save(tmp_dir / f"frame_{t:04d}.png", optimize=True)
        write_json(
            tmp_dir / "source.json",
            {
                "category": category,
                "seed": seed,
                "view": VIEW,
                "render_backend": renderer.backend,
                "num_frames": num_frames,
                "asset": meta.get("parts", None) and {k: v for k, v in meta.items() if k != "path"},
            },
        )
    return out_root / name


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "demos")
    parser.add_argument("--num-frames", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--backend", default="embree", help="renderer: embree (as make data-tiny) | pyrender")
    args = parser.parse_args()
    for i, (category, name) in enumerate(DEMO_NAMES.items()):
        path = make_demo(
            category, name, args.out, args.num_frames, args.resolution, DEMO_SEED + i, args.backend
        )
        print(f"{name:<10} ({category}) -> {path}")


if __name__ == "__main__":
    main()
