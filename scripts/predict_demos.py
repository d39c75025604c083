#!/usr/bin/env python3
"""Run ``predict.py`` on every bundled demo and stack the strips into one README picture.

    python scripts/predict_demos.py [--out outputs/demos] [--picture docs/images/predict_demos.png] [KEY=VALUE ...]
    python scripts/predict_demos.py --demos box --seeds 0 1 2 3 ckpt=<export> --picture box_seeds.png

Each demo is ``python predict.py input=demos/<name> output_dir=<out>/<name>`` (extra ``KEY=VALUE`` arguments are
passed to every run); the picture is their ``strip.png`` files (inputs over meshes) one under another, labelled,
as they are. ``--seeds`` runs each demo once per seed (``seed=S``, into ``<out>/<name>/seed_S``): whether a
checkpoint gets a demo right with every seed, not only the default one. Prints each run's wall time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ("box", "door", "angle", "chilun10", "fatman")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "demos")
    ap.add_argument("--picture", type=Path, default=ROOT / "docs" / "images" / "predict_demos.png")
    ap.add_argument("--demos", nargs="*", default=list(DEMOS))
    ap.add_argument(
        "--seeds", nargs="*", type=int, default=None, help="one run per seed (default: predict's)"
    )
    argv = sys.argv[1:] if argv is None else argv
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]  # KEY=VALUE, anywhere on the line
    args = ap.parse_args([a for a in argv if a not in overrides])
    strips = []
    runs = [(name, seed) for name in args.demos for seed in (args.seeds or [None])]
    for name, seed in runs:
        out = args.out / name if seed is None else args.out / name / f"seed_{seed}"
        seeded = [] if seed is None else [f"seed={seed}"]
        cmd = [sys.executable, str(ROOT / "predict.py"), f"input=demos/{name}", f"output_dir={out}",
               "overwrite=true", "progress=false", *overrides, *seeded]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True)
        run = name if seed is None else f"{name}, seed {seed}"
        print(f"[predict_demos] {run}: {time.perf_counter() - t0:.1f} s", flush=True)
        strip = Image.open(out / "strip.png").convert("RGB")
        label = Image.new("RGB", (strip.width, 18), "white")
        ImageDraw.Draw(label).text(
            (4, 3), f"demos/{run}: input (top), generated meshes (bottom)", fill="black"
        )
        strips.append(np.concatenate([np.asarray(label), np.asarray(strip)], axis=0))
    width = max(s.shape[1] for s in strips)
    padded = [np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in strips]
    args.picture.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.picture.with_suffix(".tmp.png")
    Image.fromarray(np.concatenate(padded, axis=0)).save(tmp)
    tmp.replace(args.picture)
    print(f"[predict_demos] wrote {args.picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
