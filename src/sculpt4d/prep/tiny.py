"""The tiny procedural 4D dataset's recipe (``make data-tiny``), shared by the script and evaluation.

Splits under ``<out>``: ``train`` (seeds 0..n-1), ``benchmark`` (held out: seeds from
``BENCHMARK_SEED_OFFSET``) and ``ood`` (real animated GLBs, out of domain). Sources are written to
``<out>/glb/<split>/<category>_<seed>.glb``, prepared objects to ``<out>/<split>/<obj>/`` (design.md §6).

Reduced sizes: 16 frames, 8 views of 128², 4096 random + 1024 sharp points, 8192 volume samples.
Procedural assets are unions of closed parts with one topology, so points, normals and occupancy labels
come from the exact frame meshes (``labels="exact"``); the GLB split (any mesh) uses a 64³ watertight
remesh (``grid_res``). Cameras are restricted to elevation 10°..35° and azimuth -60°..60° around the object's front
(+Z), the range the tiny model is conditioned on; the fixed demo viewpoint (elevation 20°, azimuth 30°)
lies inside it. Rendering uses the GL-free embree backend (4x faster than llvmpipe at 128²).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from sculpt4d.errors import InputError
from sculpt4d.prep.params import PrepParams
from sculpt4d.prep.procedural import BENCHMARK_SEED_OFFSET, CATEGORIES, generate_collection
from sculpt4d.prep.report import print_summary
from sculpt4d.prep.runner import discover, run

DEMO_VIEW = {"elevation": 20.0, "azimuth": 30.0}  # inside the tiny camera range below
TINY = dict(
    num_frames=16,
    num_views=8,
    resolution=128,
    elevation=(10.0, 35.0),
    azimuth=(-60.0, 60.0),
    radius=2.0,
    fov=40.0,
    labels="exact",
    grid_res=64,
    pc_random=4096,
    pc_sharp=1024,
    volume_size=8192,
    render_backend="embree",
)
SEED_OFFSET = {"train": 0, "benchmark": BENCHMARK_SEED_OFFSET}
BENCH_PER_CATEGORY = 4  # the default held-out benchmark: 4 sequences per category (20)
PREP_STAGES = ("frames", "render", "sample")
KNOWN_SPLITS = ("tiny/benchmark", "tiny/ood")  # what evaluation can prepare on first use


def _stats(results: list[dict], seconds: float, **extra) -> dict:
    ok = sum(r["status"] == "ok" for r in results)
    return dict(objects=len(results), ok=ok, **extra, seconds=round(seconds, 1))


def prepare_procedural_split(
    out: Path,
    split: str,
    n_per_category: int,
    categories: Sequence[str] = CATEGORIES,
    workers: int = 2,
    verify: bool = False,
    overwrite: bool = False,
    seed_offset: int | None = None,
) -> dict:
    """Generate and prepare ``n_per_category`` procedural objects per category as ``<out>/<split>``, with
    seeds from ``seed_offset`` (default: the split's own, :data:`SEED_OFFSET`)."""
    ts = time.perf_counter()
    offset = SEED_OFFSET[split] if seed_offset is None else int(seed_offset)
    if offset < BENCHMARK_SEED_OFFSET and split != "train":
        raise InputError(
            f"held-out seeds start at {BENCHMARK_SEED_OFFSET} (training uses lower ones), got {offset}"
        )
    glb_dir = out / "glb" / split
    want = [glb_dir / f"{c}_{offset + i:06d}.glb" for c in categories for i in range(n_per_category)]
    if overwrite or not all(q.exists() for q in want):
        generate_collection(glb_dir, list(categories), n_per_category, seed_offset=offset)
    t_gen = time.perf_counter() - ts
    inputs = [q for q in discover(glb_dir) if q in set(want)]
    stages = PREP_STAGES + (("verify",) if verify else ())
    res = run(
        inputs, out / split, PrepParams.from_config(**TINY), stages, workers=workers, overwrite=overwrite
    )
    print_summary(res, out / split)
    return _stats(res, time.perf_counter() - ts, generate_s=round(t_gen, 1))


def benchmark_split_name(seed_offset: int) -> str:
    """``benchmark`` for the default held-out seeds, ``benchmark_<offset>`` for a fresh draw."""
    return "benchmark" if seed_offset == BENCHMARK_SEED_OFFSET else f"benchmark_{seed_offset}"


def prepare_glb_split(src: Path, out: Path, workers: int = 2, overwrite: bool = False) -> dict:
    """Prepare every animated GLB of ``src`` (e.g. ``tests/assets/gltf``) as ``<out>/ood``, verified."""
    ts = time.perf_counter()
    res = run(discover(src), out / "ood", PrepParams.from_config(**{**TINY, "labels": "watertight"}), PREP_STAGES + ("verify",), workers=workers,
              overwrite=overwrite)  # fmt: skip
    print_summary(res, out / "ood")
    return _stats(res, time.perf_counter() - ts)


def fresh_split_offset(name: str) -> int | None:
    """The seed offset of a fresh held-out split named ``tiny/benchmark_<offset>``, else None."""
    head, sep, tail = name.rpartition("_")
    return int(tail) if head == "tiny/benchmark" and sep and tail.isdigit() else None


def is_known_split(name: str) -> bool:
    """A split evaluation can prepare itself: :data:`KNOWN_SPLITS` or ``tiny/benchmark_<offset>``."""
    return name in KNOWN_SPLITS or fresh_split_offset(name) is not None


def prepare_known_split(name: str, data_dir: Path, root_dir: Path, workers: int = 2) -> Path:
    """Prepare (or finish preparing) the benchmark ``name`` (see :func:`is_known_split`) under ``data_dir``."""
    out = data_dir / "tiny"
    offset = fresh_split_offset(name)
    if name == "tiny/benchmark":
        prepare_procedural_split(out, "benchmark", BENCH_PER_CATEGORY, CATEGORIES, workers, verify=True)
    elif offset is not None:
        prepare_procedural_split(
            out,
            benchmark_split_name(offset),
            BENCH_PER_CATEGORY,
            CATEGORIES,
            workers,
            True,
            seed_offset=offset,
        )
    elif name == "tiny/ood":
        prepare_glb_split(root_dir / "tests" / "assets" / "gltf", out, workers=workers)
    else:
        raise ValueError(f"unknown split {name!r}; known: {KNOWN_SPLITS}")
    return data_dir / name
