"""Write a smaller copy of a 4D dataset in the same on-disk format (to carry it to a GPU machine).

Keeps every ``--frame-stride``-th frame (renumbered ``frame_0000..``), the renders of ``--views`` (renamed
``000.png..``), the first ``--points`` random-surface points of every frame (consistent sampling stores
row i as the same surface point in every frame, so a prefix keeps the correspondence), ``--sharp`` sharp
points and a random ``--volume`` subset of the occupancy queries. ``meta.json`` is copied with the kept
frames' times. The result loads with the same :class:`sculpt4d.data.Objects4DDataModule`.

    python scripts/pack_dataset.py data/tiny/train data/tiny_pack/train --frame-stride 2 --views 0 4
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sculpt4d.data.records import RENDER_DIR, SURFACE_FILE, VOLUME_FILE, list_object_dirs  # noqa: E402
from sculpt4d.utils.io import atomic_dir  # noqa: E402


def pack_object(src: Path, dst: Path, args: argparse.Namespace) -> None:
    """Write the reduced copy of object folder ``src`` to ``dst`` (atomically)."""
    with np.load(src / SURFACE_FILE, allow_pickle=False) as z:
        surf = {k: z[k] for k in z.files}
    with np.load(src / VOLUME_FILE, allow_pickle=False) as z:
        vol = {k: z[k] for k in z.files}
    frames = sorted({k.split("/")[0] for k in surf})[:: args.frame_stride]
    rng = np.random.default_rng(args.seed)
    new_surf: dict[str, np.ndarray] = {}
    new_vol: dict[str, np.ndarray] = {}
    with atomic_dir(dst) as tmp:
        (tmp / "geo_data").mkdir()
        for i, fr in enumerate(frames):
            new = f"frame_{i:04d}"
            new_surf[f"{new}/random_surface"] = surf[f"{fr}/random_surface"][: args.points]
            if args.sharp > 0 and f"{fr}/sharp_surface" in surf:
                new_surf[f"{new}/sharp_surface"] = surf[f"{fr}/sharp_surface"][: args.sharp]
            pts, occ = vol[f"{fr}/points"], vol[f"{fr}/occupancy"]
            keep = np.sort(rng.choice(len(pts), size=min(args.volume, len(pts)), replace=False))
            new_vol[f"{new}/points"], new_vol[f"{new}/occupancy"] = pts[keep], occ[keep]
            out = tmp / RENDER_DIR / new
            out.mkdir(parents=True)
            for j, view in enumerate(args.views):
                shutil.copyfile(src / RENDER_DIR / fr / f"{view:03d}.png", out / f"{j:03d}.png")
        np.savez_compressed(tmp / SURFACE_FILE, **new_surf)  # inside the atomic temp folder
        np.savez_compressed(tmp / VOLUME_FILE, **new_vol)
        meta_path = src / "meta.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            keep_idx = [int(f.split("_")[1]) for f in frames]
            if "times" in meta:
                meta["times"] = [meta["times"][k] for k in keep_idx]
            meta.update(num_frames=len(frames), packed_from=str(src), packed_frames=keep_idx)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="folder of object folders (e.g. data/tiny/train)")
    p.add_argument("dst", type=Path)
    p.add_argument("--frame-stride", type=int, default=1)
    p.add_argument("--views", type=int, nargs="+", default=[0], help="render indices to keep")
    p.add_argument("--points", type=int, default=2048, help="random-surface points kept per frame")
    p.add_argument("--sharp", type=int, default=0, help="sharp-edge points kept per frame")
    p.add_argument("--volume", type=int, default=1024, help="occupancy queries kept per frame")
    p.add_argument("--max-objects", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    objects = list_object_dirs(args.src)[: args.max_objects]
    args.dst.mkdir(parents=True, exist_ok=True)
    for src in objects:
        pack_object(src, args.dst / src.name, args)
    size = sum(f.stat().st_size for f in args.dst.rglob("*") if f.is_file())
    print(f"packed {len(objects)} objects into {args.dst} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
