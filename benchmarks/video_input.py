"""Video and plain-RGB inputs against the RGBA frames they were made from, and the web app's latency.

    python benchmarks/video_input.py [--demo box] [--num-steps 10] [--resolution 48] [--app] [--json PATH]

Makes ``<demo>.mp4`` (the demo's RGBA frames composited on white, H.264 at the model's clip rate) and a
folder of the same frames as RGB PNGs on white, runs ``predict.py`` on the RGBA folder, the mp4 and the
RGB folder (same seed and settings), and prints each run's per-frame Chamfer distance to the RGBA run's
meshes (mean over frames, 20k surface samples). For scale, the RGBA folder is also run with another seed
(``seed+1``): the Chamfer between two seeds is the model's own spread. ``--app`` also starts
``python app.py`` with the same settings, generates the demo through its HTTP API (gradio_client) and
prints its round-trip time beside ``predict.py``'s wall time.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import add_json_arg, print_table, write_json
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def on_white(path: Path) -> np.ndarray:
    a = np.asarray(Image.open(path).convert("RGBA")).astype(np.float32)
    m = a[..., 3:] / 255.0
    return (a[..., :3] * m + 255.0 * (1 - m)).round().astype(np.uint8)


def make_inputs(demo: Path, out: Path, fps: float) -> tuple[Path, Path]:
    from sculpt4d.export import write_video

    frames = sorted(demo.glob("*.png"))
    rgb = out / f"{demo.name}_rgb"
    rgb.mkdir(parents=True, exist_ok=True)
    for f in frames:
        Image.fromarray(on_white(f)).save(rgb / f.name)
    mp4 = out / f"{demo.name}.mp4"
    write_video([on_white(f) for f in frames], None, mp4, fps=fps)
    return mp4, rgb


def predict(inp: Path, out: Path, args: argparse.Namespace, seed: int) -> float:
    cmd = [sys.executable, "predict.py", f"input={inp}", f"output_dir={out}", f"num_steps={args.num_steps}",
           f"octree_resolution={args.resolution}", f"seed={seed}", "progress=false"]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def chamfer(a: Path, b: Path, n: int = 20_000) -> float:
    import trimesh

    from sculpt4d.metrics.distance import chamfer_from_samples, sample_surface

    out = []
    for fa in sorted(a.glob("frame_*.obj")):
        ma, mb = trimesh.load(fa, force="mesh"), trimesh.load(b / fa.name, force="mesh")
        out.append(chamfer_from_samples(sample_surface(ma, n), sample_surface(mb, n), workers=1))
    return float(np.mean(out))


def app_round_trip(args: argparse.Namespace, tmp: Path) -> float:
    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "app.py", f"app.port={port}", f"paths.log_dir={tmp}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})  # fmt: skip
    try:
        client = None
        for _ in range(300):
            try:
                client = Client(f"http://127.0.0.1:{port}", verbose=False)
                break
            except Exception:
                time.sleep(1)
        assert client is not None, "the app did not start"
        t0 = time.perf_counter()
        client.predict(None, args.demo, args.num_steps, 5.0, 1.0, args.seed, 8, 4, "trained", args.resolution,
                       "auto", api_name="/generate")  # fmt: skip
        return time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", default="box")
    p.add_argument("--num-steps", type=int, default=10)
    p.add_argument("--resolution", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--app", action="store_true", help="also time the web app on the same demo")
    add_json_arg(p)
    args = p.parse_args()
    demo = ROOT / "data" / "demos" / args.demo
    tmp = Path(tempfile.mkdtemp(prefix="sculpt4d_video_"))
    mp4, rgb = make_inputs(demo, tmp, args.fps)
    runs = {"rgba folder": demo, "mp4 (on white)": mp4, "rgb folder (on white)": rgb}
    rows, seconds = [], {}
    for name, inp in runs.items():
        seconds[name] = predict(inp, tmp / name.split()[0], args, args.seed)
    seconds["rgba folder, seed+1"] = predict(demo, tmp / "seed1", args, args.seed + 1)
    ref = tmp / "rgba"
    for name, folder in [
        ("mp4 (on white)", "mp4"),
        ("rgb folder (on white)", "rgb"),
        ("rgba folder, seed+1", "seed1"),
    ]:
        rows.append(
            {"input": name, "chamfer_to_rgba": chamfer(ref, tmp / folder), "predict_s": seconds[name]}
        )
    rows.insert(0, {"input": "rgba folder", "chamfer_to_rgba": 0.0, "predict_s": seconds["rgba folder"]})
    if args.app:
        rows.append({"input": f"app: demos/{args.demo}", "predict_s": app_round_trip(args, tmp)})
    print_table(
        rows, title=f"demos/{args.demo}: num_steps={args.num_steps} octree_resolution={args.resolution}"
    )
    write_json(args.json, {"rows": rows, "args": vars(args)})


if __name__ == "__main__":
    main()
