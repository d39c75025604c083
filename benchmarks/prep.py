"""Seconds per frame of each data-preparation stage at the default sizes (or reduced with --quick).

    python benchmarks/prep.py [--quick] [--measure-frames 3] [--json PATH]

Default sizes: 32 frames evaluated, 24 views at 512² (pyrender EGL and embree), grid_res 256 (narrow
band; dense shown for comparison on one frame), 40960 random + 40960 sharp points. Stages that cost
the same on every frame are timed on ``--measure-frames`` frames and reported per frame.
Assets: a shared glTF (CesiumMan, skinned + textured) and a procedural one (figure).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import add_json_arg, print_table, write_json  # noqa: I001  (also puts src/ on sys.path)

from sculpt4d.prep import sampling as S
from sculpt4d.prep.cameras import CameraRange, sample_cameras
from sculpt4d.prep.gltf_anim import load_animated_mesh
from sculpt4d.prep.multiview import Renderer
from sculpt4d.prep.procedural import generate_asset
from sculpt4d.prep.stages import vertex_colors_of
from sculpt4d.prep.watertight import watertight

SHARED = Path(__file__).resolve().parents[2] / "shared" / "assets" / "gltf" / "CesiumMan.glb"


def timed(fn, *a, **k):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0, time.process_time() - c0


def bench_asset(name: str, path: Path, sz: dict, measure: int) -> list[dict]:
    rows = []
    am, wall, cpu = timed(load_animated_mesh, path, num_frames=sz["num_frames"])
    T = am.vertices.shape[0]
    rows.append(dict(asset=name, stage="animation eval", unit="frame", wall_s=wall / T, cpu_s=cpu / T,
                     note=f"{T} frames, {am.vertices.shape[1]} verts, {len(am.faces)} faces"))  # fmt: skip
    verts = np.asarray(am.vertices, np.float64)
    c, s = S.sequence_normalisation([verts.reshape(-1, 3)])
    frames = [((v - c) / s, np.asarray(am.faces)) for v in verts]
    pick = np.linspace(0, T - 1, measure).round().astype(int)
    colors = vertex_colors_of(am)
    c2w = sample_cameras(sz["num_views"], CameraRange(), seed=0)
    for backend in ("pyrender", "embree"):
        with Renderer(sz["resolution"], backend=backend) as r:
            r.render(*frames[0], colors, c2w[:1])  # warm-up (context / BVH)
            _, wall, cpu = timed(lambda: [r.render(*frames[t], colors, c2w) for t in pick])
            n = len(pick) * len(c2w)
            rows.append(dict(asset=name, stage=f"render ({r.backend})", unit="view", wall_s=wall / n, cpu_s=cpu / n,
                             note=f"{sz['resolution']}², {len(c2w)} views/frame -> {wall / len(pick):.2f} s/frame"))  # fmt: skip
    wts, wall, cpu = timed(lambda: [watertight(*frames[t], sz["grid_res"]) for t in pick])
    rows.append(dict(asset=name, stage="watertight (narrow band)", unit="frame", wall_s=wall / len(pick),
                     cpu_s=cpu / len(pick), note=f"grid {sz['grid_res']}³, {len(wts[0][1])} faces out"))  # fmt: skip
    _, wall, cpu = timed(watertight, *frames[pick[0]], sz["grid_res"], narrow_band=False)
    rows.append(
        dict(asset=name, stage="watertight (dense)", unit="frame", wall_s=wall, cpu_s=cpu, note="1 frame")
    )
    rng = np.random.default_rng(0)

    def sample():
        a = S.sample_uniform(*frames[0], sz["pc"], rng)
        b, _ = S.sample_sharp(*frames[0], sz["pc"], rng)
        both = S.SurfaceSamples(np.concatenate([a.face, b.face]), np.concatenate([a.bary, b.bary]))
        return S.track(both, frames[0], [frames[t] for t in pick], wts)

    _, wall, cpu = timed(sample)
    rows.append(dict(asset=name, stage="sampling (track+project)", unit="frame", wall_s=wall / len(pick),
                     cpu_s=cpu / len(pick), note=f"{sz['pc']} random + {sz['pc']} sharp"))  # fmt: skip
    return rows


def main() -> None:
    ap = add_json_arg(argparse.ArgumentParser(description=__doc__))
    ap.add_argument(
        "--quick", action="store_true", help="reduced sizes (16 frames, 8 views 128², grid 64, 4096 pts)"
    )
    ap.add_argument("--measure-frames", type=int, default=3)
    args = ap.parse_args()
    sz = dict(num_frames=32, num_views=24, resolution=512, grid_res=256, pc=40960)
    if args.quick:
        sz = dict(num_frames=16, num_views=8, resolution=128, grid_res=64, pc=4096)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        proc = Path(tmp) / "figure_000000.glb"
        generate_asset("figure", 0, proc)
        assets = [("procedural figure", proc)] + ([("CesiumMan", SHARED)] if SHARED.exists() else [])
        for name, path in assets:
            rows += bench_asset(name, path, sz, args.measure_frames)
    print_table(rows, title=f"prep stage cost per unit ({'quick' if args.quick else 'default'} sizes: {sz})")
    write_json(args.json, dict(sizes=sz, rows=rows))


if __name__ == "__main__":
    main()
