"""Stage breakdown of one ``predict.py`` run, side by side for the options that matter.

    python benchmarks/predict.py --json predict.json                      # shipped tiny model, demos/box
    python benchmarks/predict.py --quick --random-weights                 # self-test: random conf/model/tiny.yaml
    python benchmarks/predict.py --rows base,dense,gather,steps25 --repeats 3

Every row runs the real ``run_predict`` (frames read, pipeline, every export) with one setting changed from
``base`` (the predict defaults of the checkpoint) and reports seconds per stage: ``read`` (frames from disk),
``load`` (preprocess), ``condition`` (image conditioner), ``step`` (one sampling step, CFG pair),
``volume`` / ``surface`` per mesh (geometry-decoder queries / marching cubes + largest component) and
``export`` (obj, glb, strip png/video). ``ratio`` = total / total of ``base`` in the same run.
Row names: ``base``; ``<backend>`` (dense, gather, ...: the attention backend); ``steps<K>``; ``until<NN>``
(``guidance_until=0.NN``: CFG pairs only below that flow time); ``samples<K>`` (``num_samples=K``: K sequences
sampled, meshed at their mean occupancy); ``flat`` (no
hierarchical decoding); ``res<R>`` (octree resolution); ``threads<n>``; ``chunks<n>`` (query points per
decoder call); ``minres<R>`` (coarsest hierarchical level, a speed/quality trade-off); ``fp32decode`` /
``bf16decode`` (the decoder's queries in fp32 / under bf16 autocast, ``decode_dtype``; base: ``auto``); ``lowvram``
(``low_vram=true``); ``compile`` / ``compile-<mode>`` (``compile=<mode>``: regional torch.compile of the DiT; give
``--repeats 2``, the first run pays the compilation). ``mesh_vs_base``: the largest per-frame vertex Chamfer distance
to base's meshes (0 = identical; only rows with base's steps compare). ``peak_GiB``: CUDA peak memory of the row.

The paper model end to end on a GPU, random weights written in the release's sharded format (DINOv2-L, 50 steps
x CFG, 16 frames decoded at 256^3):

    python benchmarks/predict.py --random-weights sculpt4d --rows base,compile-reduce-overhead,lowvram --repeats 2 \
        sequence_length=16 device=cuda
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import ROOT, add_json_arg, print_table, row_settings, timing, write_json

DEFAULT_ROWS = "base,dense,gather,steps10,steps25,until50,samples2,flat,res64,res128,minres48,minres24,chunks32000,threads1,fp32decode,bf16decode"
QUICK_ROWS = "base,dense,gather,flat,minres16,chunks4000,fp32decode"


def random_export(out: Path, model_name: str = "tiny", seed: int = 0) -> Path:
    """A random-weights export of ``conf/model/<model_name>.yaml`` with the blockmask attention: the tiny
    experiment's (block 32) for ``tiny``; for the paper model (``sculpt4d``) block 128, bf16 weights in 5 GB
    shards (``model-0000X-of-0000N.safetensors`` + index, as the release ships them)."""
    from omegaconf import OmegaConf

    from sculpt4d.hub import save_safetensors
    from sculpt4d.models.factory import build_components

    model = OmegaConf.to_container(
        OmegaConf.load(ROOT / "conf" / "model" / f"{model_name}.yaml"), resolve=True
    )
    attention = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "attention" / "blockmask.yaml"))
    paper = model_name != "tiny"
    attention.update(block_size=128 if paper else 32, backend="auto" if paper else "dense")
    torch.manual_seed(seed)
    comps = build_components(model, attention)
    with torch.no_grad():
        for name, p in comps.state_dict().items():  # zero-initialised adapters would make frames identical
            if "adapter" in name and p.is_floating_point():
                p.normal_(0, 0.05)
    out.mkdir(parents=True, exist_ok=True)
    sd = comps.state_dict()
    if paper:
        sd = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()}
    save_safetensors(sd, out / "model.safetensors", shard_size="5GB" if paper else None)
    (out / "config.yaml").write_text(OmegaConf.to_yaml({"model": model, "attention": attention}))
    return out


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from sculpt4d.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(
            "predict", overrides=[f"paths.root_dir={ROOT}", *overrides], return_hydra_config=True
        )


def run_row(base: list[str], name: str, out_dir: Path, pipe_cache: dict[str, Any]) -> dict[str, Any]:
    """One ``run_predict`` with its stages timed."""
    from hydra.core.hydra_config import HydraConfig

    import sculpt4d.inputs.config as inputs_config
    import sculpt4d.models.vae.model as vae_model
    from sculpt4d.predict import build_pipeline, run_predict, with_checkpoint_defaults

    overrides, extra = row_settings(name)
    cfg = compose([*base, *overrides, f"output_dir={out_dir / name}", "progress=false"])
    HydraConfig.instance().set_config(cfg)
    if "pipe" not in pipe_cache:
        pipe_cache["pipe"] = build_pipeline(cfg)
        pipe_cache["backend"] = pipe_cache["pipe"].components.model.backend
    pipe = pipe_cache["pipe"]
    pipe.components.model.backend = extra.get("backend", pipe_cache["backend"])
    pipe.low_vram = extra.get("low_vram", bool(cfg.get("low_vram", False)))
    pipe.compile(extra.get("compile", cfg.get("compile")))
    cuda = pipe.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    threads = torch.get_num_threads()
    torch.set_num_threads(extra.get("threads", threads))
    t: dict[str, float] = defaultdict(float)
    with contextlib.ExitStack() as stack:
        stack.enter_context(timing(inputs_config, "frames_from_config", t, "read"))
        stack.enter_context(timing(pipe, "load_images", t, "load"))
        stack.enter_context(timing(pipe, "encode_condition", t, "condition"))
        stack.enter_context(timing(pipe, "sample_latents", t, "sampling"))
        stack.enter_context(timing(pipe, "decode", t, "decode", pipe_cache.setdefault("meshes", {})))
        stack.enter_context(timing(pipe.components.vae, "_volumes", t, "volume"))
        stack.enter_context(timing(vae_model, "extract_surface", t, "mc"))
        t0 = time.perf_counter()
        run_predict(cfg, pipeline=pipe)
        total = time.perf_counter() - t0
    torch.set_num_threads(threads)
    meshes = pipe_cache["meshes"].pop("decode")
    pipe_cache.setdefault("base_meshes", meshes)  # the first row run is base
    cfg = with_checkpoint_defaults(cfg, pipe.inference)  # null keys = the checkpoint's own defaults
    T, steps = int(cfg.sequence_length), int(cfg.num_steps)
    pipeline_s = t["load"] + t["condition"] + t["sampling"] + t["decode"]
    return {
        "row": name,
        "backend": pipe.components.model.backend,
        "steps": steps,
        "R": int(cfg.octree_resolution),
        "hier": bool(cfg.hierarchical),
        "threads": extra.get("threads", threads),
        "read_s": t["read"],
        "load_s": t["load"],
        "condition_s": t["condition"],
        "step_s": t["sampling"] / steps,
        "volume_s_per_mesh": t["volume"] / T,
        "surface_s_per_mesh": (t["decode"] - t["volume"]) / T,
        "export_s": total - t["read"] - pipeline_s,
        "total_s": total,
        "faces": sum(len(m.faces) for m in meshes),
        "peak_GiB": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "mesh_vs_base": mesh_difference(meshes, pipe_cache["base_meshes"]),
    }


def mesh_difference(meshes: list, reference: list) -> float:
    """Largest per-frame vertex Chamfer distance to the reference meshes (0.0: identical vertices)."""
    from scipy.spatial import cKDTree

    worst = 0.0
    for a, b in zip(meshes, reference, strict=True):
        va, vb = np.asarray(a.vertices), np.asarray(b.vertices)
        if va.shape == vb.shape and np.array_equal(va, vb):
            continue
        if len(va) == 0 or len(vb) == 0:
            return float("inf")
        d = 0.5 * (cKDTree(vb).query(va)[0].mean() + cKDTree(va).query(vb)[0].mean())
        worst = max(worst, float(d))
    return worst


def main() -> None:
    ap = add_json_arg(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--ckpt", default=None, help="exported model (default: the predict config's ckpt)")
    ap.add_argument("--input", default="demos/box")
    ap.add_argument("--rows", default=None, help=f"comma list (default: {DEFAULT_ROWS})")
    ap.add_argument("--repeats", type=int, default=1, help="runs per row; the fastest is kept")
    ap.add_argument(
        "--random-weights",
        nargs="?",
        const="tiny",
        choices=["tiny", "sculpt4d"],
        help="a random export of conf/model/<tiny|sculpt4d>.yaml (default tiny)",
    )
    ap.add_argument("--quick", action="store_true", help="2 steps, R=32, a few rows: checks that it runs")
    ap.add_argument("overrides", nargs="*", help="extra predict overrides for every row, e.g. num_steps=25")
    args = ap.parse_args()
    rows_spec = args.rows or (QUICK_ROWS if args.quick else DEFAULT_ROWS)
    names = rows_spec.split(",")
    if "base" not in names:
        names.insert(0, "base")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ckpt = (
            str(random_export(tmp_path / "ckpt", args.random_weights)) if args.random_weights else args.ckpt
        )
        base = [f"input={args.input}", f"paths.log_dir={tmp_path / 'logs'}", *args.overrides]
        if args.random_weights == "sculpt4d":
            base.append("model=sculpt4d")
        if ckpt:
            base.append(f"ckpt={ckpt}")
        if args.quick:
            base += ["num_steps=2", "octree_resolution=32"]
        cache: dict[str, Any] = {}
        rows: list[dict[str, Any]] = []
        for name in names:
            runs = [run_row(base, name, tmp_path / "out" / f"{name}_{i}", cache) for i in range(args.repeats)]
            rows.append(min(runs, key=lambda r: r["total_s"]))
    ref = next(r for r in rows if r["row"] == "base")["total_s"]
    for r in rows:
        r["ratio"] = r["total_s"] / ref
    env = {
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "input": args.input,
        "ckpt": ckpt or "predict default",
        "repeats": args.repeats,
    }
    print_table(rows, f"predict.py stage breakdown (seconds; ratio = total / base) on {env}")
    write_json(args.json, {"env": env, "rows": rows})


if __name__ == "__main__":
    main()
