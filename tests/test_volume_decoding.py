"""Volume decoding (dense grid convention, hierarchical refinement) and surface extraction backends."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from sculpt4d.errors import MissingDependencyError
from sculpt4d.models.vae import (
    ShapeVAE,
    decode_dense,
    decode_hierarchical,
    extract_surface,
    fill_unevaluated,
    hierarchy_resolutions,
    near_surface_mask,
)

B = 1.01


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of the two directional mean nearest-neighbour distances."""
    return 0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def sphere_fn(radius: float = 0.6, centre=(0.1, -0.05, 0.0), sharp: float = 20.0):
    c = torch.tensor(centre)
    return lambda xyz: sharp * (radius - (xyz - c).norm(dim=-1))  # positive inside


def torus_fn(R: float = 0.55, r: float = 0.2, sharp: float = 20.0):
    def f(xyz: torch.Tensor) -> torch.Tensor:
        q = torch.stack([xyz[:, :2].norm(dim=-1) - R, xyz[:, 2]], -1)
        return sharp * (r - q.norm(dim=-1))

    return f


def tiny_vae(seed: int = 0) -> ShapeVAE:
    torch.manual_seed(seed)
    return ShapeVAE(
        num_latents=16,
        embed_dim=8,
        width=64,
        heads=4,
        num_encoder_layers=1,
        num_decoder_layers=2,
        num_freqs=4,
        pc_size=320,
        logvar_max=0.0,
    ).eval()


# ---- dense grid convention ------------------------------------------------------------------------------
def test_dense_grid_convention():
    seen = []

    def record(xyz: torch.Tensor) -> torch.Tensor:
        seen.append(xyz.clone())
        return xyz[:, 0] * 100 + xyz[:, 1] * 10 + xyz[:, 2]

    res = decode_dense(record, bounds=B, resolution=4, num_chunks=7)
    xyz = torch.cat(seen)
    ax = np.linspace(-B, B, 5)
    ref = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)  # x slowest
    np.testing.assert_array_equal(xyz.numpy(), ref.astype(np.float32))
    assert res.logits.shape == (5, 5, 5) and res.logits.dtype == torch.float32 and res.num_queries == 125
    assert res.logits[1, 2, 3] == pytest.approx(float(ax[1] * 100 + ax[2] * 10 + ax[3]), abs=1e-4)
    assert len(seen) == 18  # ceil(125 / 7) chunks


def test_hierarchy_resolutions():
    assert hierarchy_resolutions(256) == [64, 128, 256]
    assert hierarchy_resolutions(384) == [96, 192, 384]
    assert hierarchy_resolutions(128) == [64, 128]
    assert hierarchy_resolutions(255) == [255]
    assert hierarchy_resolutions(64, min_resolution=16) == [16, 32, 64]
    assert hierarchy_resolutions(96) == [96]  # the tiny model's default grid decodes densely ...
    assert hierarchy_resolutions(96, min_resolution=48) == [
        48,
        96,
    ]  # ... decode_min_resolution=48: coarse-to-fine


def test_near_surface_mask_marks_sign_changes_and_band():
    g = torch.full((5, 5, 5), -5.0)
    g[2, 2, 2] = 5.0
    m = near_surface_mask(g, threshold=0.95)
    expected = {(2, 2, 2), (1, 2, 2), (3, 2, 2), (2, 1, 2), (2, 3, 2), (2, 2, 1), (2, 2, 3)}
    assert {tuple(i) for i in m.nonzero().tolist()} == expected
    g[0, 0, 0] = -0.5  # inside the |logit| band
    assert near_surface_mask(g, threshold=0.95)[0, 0, 0] and not near_surface_mask(g, threshold=0.4)[0, 0, 0]


# ---- hierarchical vs dense ------------------------------------------------------------------------------
@pytest.mark.parametrize("field", [sphere_fn(), torus_fn()], ids=["sphere", "torus"])
def test_hierarchical_matches_dense_on_analytic_fields(field):
    dense = decode_dense(field, B, 48, num_chunks=1 << 16)
    hier = decode_hierarchical(field, B, 48, num_chunks=1 << 16, min_resolution=12)
    assert hier.resolutions == [12, 24, 48]
    assert hier.num_queries < 0.5 * dense.num_queries
    ev = hier.evaluated
    torch.testing.assert_close(hier.logits[ev], dense.logits[ev])
    vd, fd = extract_surface(dense.logits, B)
    vh, fh = extract_surface(hier.logits, B)
    vn, fn = extract_surface(hier.with_nan(), B)  # NaN-marked output gives the same mesh
    assert len(fd) > 1000 and len(fh) == len(fd)
    assert chamfer(vd, vh) < 1e-4 and chamfer(vd, vn) < 1e-4
    assert torch.isnan(hier.with_nan()).any() and not torch.isnan(hier.logits).any()


@pytest.mark.parametrize("level", [-4.0, 4.0])
def test_another_level_moves_the_surface_and_the_refinement_follows_it(level):
    # logits 20 (0.6 - r): the level-L surface is the sphere of radius 0.6 - L / 20; coarse-to-fine must refine
    # around that surface, not around logit 0, to give the dense grid's mesh
    centre = np.array([0.1, -0.05, 0.0])
    field = sphere_fn(0.6, tuple(centre), sharp=20.0)
    dense = decode_dense(field, B, 48, num_chunks=1 << 16)
    hier = decode_hierarchical(field, B, 48, num_chunks=1 << 16, level=level, min_resolution=12)
    vd, _ = extract_surface(dense.logits, B, level=level)
    vh, _ = extract_surface(hier.logits, B, level=level)
    v0, _ = extract_surface(dense.logits, B)
    radius, radius0 = np.linalg.norm(vh - centre, axis=1), np.linalg.norm(v0 - centre, axis=1)
    assert abs((radius.mean() - radius0.mean()) - (-level / 20.0)) < 0.005  # the surface moved by L / 20
    assert chamfer(vd, vh) < 1e-4


def test_hierarchical_matches_dense_on_tiny_vae_field():
    vae = tiny_vae()
    h = vae.decode(torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(0)))
    raw = lambda xyz: vae.query(h, xyz[None])[0]
    with torch.no_grad():
        probe = raw(torch.rand(4000, 3) * 2 - 1)
        mu, sd = probe.mean(), probe.std()
        sphere = sphere_fn(0.55, (0.0, 0.0, 0.0), sharp=12.0)
        field = lambda xyz: sphere(xyz) + 2.0 * (raw(xyz) - mu) / sd  # a VAE-bumped sphere
        dense = decode_dense(field, B, 24)
        hier = decode_hierarchical(field, B, 24, min_resolution=6)
    assert hier.num_queries < dense.num_queries
    torch.testing.assert_close(
        hier.logits[hier.evaluated], dense.logits[hier.evaluated], atol=1e-4, rtol=1e-4
    )
    vd, _ = extract_surface(dense.logits, B)
    vh, _ = extract_surface(hier.logits, B)
    cell = 2 * B / 24
    assert chamfer(vd, vh) < 0.05 * cell


def test_vae_decode_volume_dense_and_hierarchical():
    vae = tiny_vae()
    with torch.no_grad():
        vae.geo_decoder.output_proj.weight.mul_(200.0)  # logits of order ±10: a real band to refine
    z = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(1))
    dense = vae.decode_volume(z, resolution=12, hierarchical=False)
    hier = vae.decode_volume(z, resolution=12, hierarchical=True, min_resolution=3)
    assert dense.shape == hier.shape == (2, 13, 13, 13) and dense.dtype == torch.float32
    assert not torch.isnan(dense).any()
    ok = ~torch.isnan(hier)
    assert 0 < ok.sum() < ok.numel()
    torch.testing.assert_close(hier[ok], dense[ok], atol=1e-4, rtol=1e-4)
    results = vae.decode_volume(z, resolution=12, hierarchical=True, min_resolution=3, return_results=True)
    for r, grid in zip(results, hier):
        assert r.resolutions == [3, 6, 12]
        assert torch.equal(r.evaluated, ~torch.isnan(grid))
        # coarse 4^3 dense + level-6 points + level-12 points (this random field is rough: most are refined);
        # a fine point that is a coarse one already evaluated is not queried again (reuse_coarse)
        assert int(r.evaluated.sum()) <= r.num_queries <= 4**3 + 7**3 + 13**3


def test_bf16_decoder_queries_stay_close_to_fp32():
    vae = tiny_vae()
    with torch.no_grad():
        vae.geo_decoder.output_proj.weight.mul_(200.0)  # logits of order ±10, as a trained decoder's
    z = torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(2))
    fp32 = vae.decode_volume(z, resolution=16, hierarchical=False)
    bf16 = vae.decode_volume(z, resolution=16, hierarchical=False, query_dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # another path, float32 out
    scale = float(fp32.abs().mean())
    assert float((bf16 - fp32).abs().max()) < 0.05 * scale  # bf16 keeps ~3 significant digits
    assert float(((bf16 > 0) != (fp32 > 0)).float().mean()) < 0.01  # the surface barely moves


# ---- surface extraction ---------------------------------------------------------------------------------
def test_mc_backends_agree_outward_and_vertex_convention():
    R = 48
    grid = decode_dense(sphere_fn(0.6, (0.0, 0.0, 0.0)), B, R).logits
    v_mc, f_mc = extract_surface(grid, B, algo="mc")
    v_sk, f_sk = extract_surface(grid, B, algo="skimage")
    assert chamfer(v_mc, v_sk) < 1e-5
    for v, f in ((v_mc, f_mc), (v_sk, f_sk)):
        mesh = trimesh.Trimesh(v, f)
        assert mesh.is_watertight and mesh.volume > 0  # outward normals
    # reference parity: verts / (R+1) * (max-min) + min, i.e. R/(R+1) of the exact mapping about the min corner
    v_exact, _ = extract_surface(grid, B, algo="mc", exact_bounds=True)
    np.testing.assert_allclose(v_mc, (v_exact + B) * R / (R + 1) - B, atol=1e-5)
    assert np.linalg.norm(v_exact, axis=1).mean() == pytest.approx(0.6, rel=0.01)


def test_nan_regions_take_the_side_of_their_neighbours():
    grid = decode_dense(sphere_fn(0.6, (0.0, 0.0, 0.0)), B, 32).logits.numpy()
    holed = grid.copy()
    holed[14:19, 14:19, 14:19] = np.nan  # deep inside
    holed[:3] = np.nan  # outside slab
    filled = fill_unevaluated(holed)
    assert (filled[14:19, 14:19, 14:19] > 0).all() and (filled[:3] < 0).all()
    v0, f0 = extract_surface(grid, B)
    v1, f1 = extract_surface(holed, B)
    np.testing.assert_array_equal(f0, f1)
    np.testing.assert_allclose(v0, v1)


def test_empty_surface_gives_empty_arrays():
    for grid in (
        torch.full((9, 9, 9), -3.0),
        torch.full((9, 9, 9), 3.0),
        torch.full((9, 9, 9), float("nan")),
    ):
        v, f = extract_surface(grid, B)
        assert v.shape == (0, 3) and f.shape == (0, 3)


@pytest.mark.parametrize(
    ("algo", "modules", "package", "hint"),
    [
        ("dmc", ("diso",), "diso", "pip install diso"),
        ("fc", ("kaolin", "kaolin.non_commercial"), "kaolin", "pip install kaolin"),
    ],
)
def test_missing_backend_error(monkeypatch, algo, modules, package, hint):
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)  # import now fails even if installed
    grid = decode_dense(sphere_fn(), B, 8).logits
    with pytest.raises(MissingDependencyError) as err:
        extract_surface(grid, B, algo=algo)
    msg = str(err.value)
    assert package in msg and hint in msg and "mc_algo=mc" in msg
    assert err.value.package == package
    with pytest.raises(ValueError, match="unknown surface extractor"):
        extract_surface(grid, B, algo="nope")


# ---- latents_to_mesh ------------------------------------------------------------------------------------
def test_latents_to_mesh_batch_components_and_empty(monkeypatch):
    vae = tiny_vae()
    big, small = sphere_fn(0.5, (-0.3, 0.0, 0.0)), sphere_fn(0.2, (0.6, 0.0, 0.0))

    def two_spheres(
        h: torch.Tensor, xyz: torch.Tensor, kv=None
    ) -> torch.Tensor:  # [1, N, W], [1, P, 3] -> [1, P]
        return torch.maximum(big(xyz[0]), small(xyz[0]))[None]

    monkeypatch.setattr(vae, "query", two_spheres)
    z = torch.zeros(2, 16, 8)
    meshes = vae.latents_to_mesh(z, octree_resolution=32, min_resolution=8)
    assert len(meshes) == 2 and all(isinstance(m, trimesh.Trimesh) for m in meshes)
    assert len(meshes[0].split(only_watertight=False)) == 2 and meshes[0].volume > 0
    kept = vae.latents_to_mesh(z[:1], octree_resolution=32, largest_component=True, hierarchical=False)[0]
    assert len(kept.split(only_watertight=False)) == 1
    assert kept.vertices[:, 0].max() < 0.3  # the big sphere (centre x=-0.3, r=0.5) survived

    monkeypatch.setattr(vae, "query", lambda h, xyz, kv=None: -torch.ones(xyz.shape[:2]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        empty = vae.latents_to_mesh(z[:1], octree_resolution=8, hierarchical=False)[0]
    assert len(empty.faces) == 0 and any("no surface" in str(w.message) for w in caught)


# ---- fast paths pinned to the reference path -------------------------------------------------------------
def test_latent_kv_reuse_is_bitwise_the_reference_query():
    vae = tiny_vae()
    g = torch.Generator().manual_seed(3)
    h = vae.decode(torch.randn(2, 16, 8, generator=g))
    xyz = torch.rand(2, 500, 3, generator=g) * 2 - 1
    with torch.no_grad():
        kv = vae.geo_decoder.latent_kv(h)
        assert torch.equal(vae.query(h, xyz, kv), vae.query(h, xyz))
        assert torch.equal(
            vae.query(h[1:], xyz[1:, :77], tuple(t[1:] for t in kv)), vae.query(h[1:], xyz[1:, :77])
        )


def _bumped_sphere():
    vae = tiny_vae()
    h = vae.decode(torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(0)))
    sphere = sphere_fn(0.55, (0.0, 0.0, 0.0), sharp=12.0)
    with torch.no_grad():
        probe = vae.query(h, torch.rand(1, 4000, 3) * 2 - 1)[0]
    mu, sd = probe.mean(), probe.std()

    def field(xyz: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return sphere(xyz) + 2.0 * (vae.query(h, xyz[None])[0] - mu) / sd

    return field


@pytest.mark.parametrize("name", ["torus", "vae"])
@pytest.mark.parametrize("R,min_res", [(48, 12), (32, 16)])
def test_reuse_coarse_gives_the_reference_grid_with_fewer_queries(name, R, min_res):
    """Fine points (2i, 2j, 2k) keep their coarse logit: same grid and mesh as re-querying them."""
    field = torus_fn() if name == "torus" else _bumped_sphere()
    ref = decode_hierarchical(field, B, R, num_chunks=1000, min_resolution=min_res, reuse_coarse=False)
    fast = decode_hierarchical(field, B, R, num_chunks=1000, min_resolution=min_res)
    assert fast.resolutions == ref.resolutions and len(ref.resolutions) >= 2
    assert torch.equal(fast.evaluated, ref.evaluated)
    assert fast.num_queries < ref.num_queries
    torch.testing.assert_close(fast.logits, ref.logits, atol=1e-5, rtol=1e-5)
    vr, fr = extract_surface(ref.logits, B)
    vf, ff = extract_surface(fast.logits, B)
    assert len(fr) > 100 and np.array_equal(fr, ff)
    np.testing.assert_allclose(vf, vr, atol=1e-5)


def test_vae_hierarchical_mesh_equals_reference_path():
    """latents_to_mesh (cached latent keys/values, coarse reuse, inference mode) vs a plain re-query decode."""
    vae = tiny_vae()
    with torch.no_grad():
        vae.geo_decoder.output_proj.weight.mul_(200.0)
    z = torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(1))
    fast = vae.decode_volume(z, resolution=16, hierarchical=True, min_resolution=4, return_results=True)[0]
    with torch.no_grad():
        h = vae.decode(z)
        ref = decode_hierarchical(
            lambda xyz: vae.query(h, xyz[None])[0], B, 16, min_resolution=4, reuse_coarse=False
        )
    assert torch.equal(fast.evaluated, ref.evaluated) and fast.num_queries < ref.num_queries
    torch.testing.assert_close(fast.logits, ref.logits, atol=1e-5, rtol=1e-5)
