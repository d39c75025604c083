"""Volume decoding and surface extraction: dense vs hierarchical decode, PyMCubes vs scikit-image.

    python benchmarks/decoding.py [--resolutions 128 256] [--device auto] [--json PATH]

Fields decoded (both rows per resolution, side by side):
- ``tiny-vae``: a randomly initialised ShapeVAE with the ``conf/model/tiny.yaml`` sizes (128 latents ×
  16 channels, width 128). Nothing is fitted, so its raw logits are noise around a constant; the query function is
  ``12·(0.55 − |x|) + standardise(vae logits)`` — a VAE-bumped sphere, so a surface exists and every
  query pays the full geometry-decoder cost (the sphere term is free).
- ``tiny-vae-no-kv-cache``: the same with the decoder's latent-side keys/values recomputed for every chunk
  (the path before they were cached): its time against ``tiny-vae`` is that saving.
- ``sphere``: the analytic field ``20·(0.6 − |x − c|)`` alone (query cost ≈ 0): the pure overhead of the
  hierarchy (masks, dilation, upsampling) and the best-case point savings.
Modes: ``dense``, ``hierarchical`` and ``hierarchical, re-query coarse points`` (``reuse_coarse=False``: fine
points that are coarse points are queried again, as the reference does).
``query_pts`` is the number of points evaluated (all levels for hierarchical); ``chamfer`` is between
the dense and the hierarchical mesh (mean of both directions' mean NN distance over vertices).
The surface-extraction rows mesh one 257³ grid (the dense tiny-vae grid at R=256 when decoded, else the
sphere) with PyMCubes (``mc_algo=mc``) and scikit-image Lewiner (``skimage``, the reference's extractor).
On a 2-core CPU the tiny-VAE geometry decoder runs ~10⁵ points/s, so its R=256 dense decode (16.97 M
points) takes minutes: run that on a GPU (``--device cuda``) or lower ``--resolutions``.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import add_json_arg, print_table, write_json
from scipy.spatial import cKDTree

from sculpt4d.models.vae import ShapeVAE, decode_dense, decode_hierarchical, extract_surface

BOUNDS = 1.01
TINY = dict(
    num_latents=128,
    embed_dim=16,
    width=128,
    heads=4,
    num_encoder_layers=2,
    num_decoder_layers=3,
    num_freqs=8,
    include_pi=False,
    point_feats=4,
    pc_size=2048,
    downsample_ratio=16,
    logvar_max=0.0,
)


def tiny_config() -> dict:
    """The tiny VAE sizes from conf/model/tiny.yaml (fallback: the values above)."""
    path = Path(__file__).resolve().parents[1] / "conf" / "model" / "tiny.yaml"
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(OmegaConf.load(path).vae, resolve=True)
        cfg.pop("_target_", None)
        return cfg
    except Exception:  # noqa: BLE001 - the benchmark still runs from the built-in sizes
        return dict(TINY)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tiny_vae_field(
    device: torch.device, seed: int = 0, cache_kv: bool = True
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``cache_kv``: the latent-side keys/values computed once (as ``ShapeVAE.decode_volume``), else per call."""
    torch.manual_seed(seed)
    vae = ShapeVAE(**tiny_config()).eval().to(device)
    with torch.no_grad():
        h = vae.decode(torch.randn(1, vae.num_latents, vae.embed_dim, device=device))
        probe = vae.query(h, (torch.rand(1, 20000, 3, device=device) * 2 - 1))[0]
        kv = vae.geo_decoder.latent_kv(h) if cache_kv else None
    mu, sd = probe.mean(), probe.std()

    def field(xyz: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            raw = vae.query(h, xyz[None], kv)[0]
        return 12.0 * (0.55 - xyz.norm(dim=-1)) + 1.0 * (raw - mu) / sd

    return field


def sphere_field(xyz: torch.Tensor) -> torch.Tensor:
    c = torch.tensor([0.1, -0.05, 0.0], device=xyz.device)
    return 20.0 * (0.6 - (xyz - c).norm(dim=-1))


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean()))


def timed(fn: Callable, device: torch.device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def bench_decoding(fields: dict, resolutions: list[int], num_chunks: int, device: torch.device):
    rows, grids = [], {}
    for name, field in fields.items():
        field(torch.zeros(8, 3, device=device))  # warm-up
        for R in resolutions:
            dense, t_dense = timed(
                lambda f=field, r=R: decode_dense(f, BOUNDS, r, num_chunks, device=device), device
            )
            hier, t_hier = timed(
                lambda f=field, r=R: decode_hierarchical(f, BOUNDS, r, num_chunks, device=device), device
            )
            requery, t_requery = timed(
                lambda f=field, r=R: decode_hierarchical(
                    f, BOUNDS, r, num_chunks, device=device, reuse_coarse=False
                ),
                device,
            )
            vd, fd = extract_surface(dense.logits, BOUNDS)
            vh, fh = extract_surface(hier.logits, BOUNDS)
            grids[(name, R)] = dense.logits.cpu()
            cd = chamfer(vd, vh)
            vr, fr = extract_surface(requery.logits, BOUNDS)
            modes = (
                ("dense", dense, t_dense, fd, 0.0),
                ("hierarchical", hier, t_hier, fh, cd),
                ("hierarchical, re-query coarse points", requery, t_requery, fr, chamfer(vd, vr)),
            )
            for mode, res, t, faces, cd_mode in modes:
                rows.append(
                    {
                        "field": name,
                        "R": R,
                        "mode": mode,
                        "levels": "/".join(map(str, res.resolutions)),
                        "query_pts": res.num_queries,
                        "pts_ratio": res.num_queries / dense.num_queries,
                        "time_s": t,
                        "speedup": t_dense / t,
                        "faces": len(faces),
                        "chamfer_vs_dense": cd_mode,
                    }
                )
    return rows, grids


def bench_extraction(grid: torch.Tensor, source: str, repeats: int):
    rows = []
    for algo, label in (("mc", "PyMCubes"), ("skimage", "scikit-image lewiner")):
        extract_surface(grid, BOUNDS, algo=algo)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            v, f = extract_surface(grid, BOUNDS, algo=algo)
            times.append(time.perf_counter() - t0)
        rows.append(
            {
                "extractor": label,
                "mc_algo": algo,
                "grid": f"{grid.shape[0]}^3 ({source})",
                "time_s": float(np.median(times)),
                "verts": len(v),
                "faces": len(f),
            }
        )
    base = rows[1]["time_s"]
    for r in rows:
        r["speedup_vs_skimage"] = base / r["time_s"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolutions", type=int, nargs="+", default=[128, 256])
    ap.add_argument(
        "--fields",
        nargs="+",
        default=["tiny-vae", "tiny-vae-no-kv-cache", "sphere"],
        choices=["tiny-vae", "tiny-vae-no-kv-cache", "sphere"],
    )
    ap.add_argument("--num-chunks", type=int, default=8000, help="query points per geometry-decoder call")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--mc-resolution", type=int, default=256, help="grid resolution for the extractor rows")
    ap.add_argument("--repeats", type=int, default=3)
    add_json_arg(ap)
    args = ap.parse_args()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    env = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "num_chunks": args.num_chunks,
    }
    print(f"decoding benchmark on {env}", flush=True)

    makers = {
        "tiny-vae": lambda: tiny_vae_field(device),
        "tiny-vae-no-kv-cache": lambda: tiny_vae_field(device, cache_kv=False),
        "sphere": lambda: sphere_field,
    }
    fields = {name: makers[name]() for name in args.fields}
    dec_rows, grids = bench_decoding(fields, args.resolutions, args.num_chunks, device)
    print_table(dec_rows, "Volume decoding: dense vs hierarchical (bounds 1.01, level 0)")

    R = args.mc_resolution
    source = next((n for n in args.fields if (n, R) in grids), None)
    grid = grids[(source, R)] if source else decode_dense(sphere_field, BOUNDS, R, 1 << 20).logits
    mc_rows = bench_extraction(grid, source or "sphere", args.repeats)
    print_table(mc_rows, f"Surface extraction on a {R + 1}^3 grid (median of {args.repeats})")
    write_json(args.json, {"env": env, "decoding": dec_rows, "extraction": mc_rows})


if __name__ == "__main__":
    main()
