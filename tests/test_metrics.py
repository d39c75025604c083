"""Metrics on analytic shapes (concentric / translated icospheres) with known answers."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import trimesh

from sculpt4d.errors import InputError
from sculpt4d.metrics import (
    WORST_CHAMFER,
    apply_normalization,
    chamfer_distance,
    default_bounds,
    evaluate_sequence,
    fscore,
    grid_points,
    normalize_sequence,
    occupancy,
    occupancy_grid,
    prepare_ground_truth,
    scanline_occupancy,
    score_sequence,
    temporal_jitter,
    volume_iou,
)

N = 20_000  # samples per surface: fast, and accurate to ~1e-3 on these shapes


def sphere(r: float, center=(0.0, 0.0, 0.0), subdivisions: int = 4) -> trimesh.Trimesh:
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=r)
    m.apply_translation(center)
    return m


def test_concentric_spheres_chamfer():
    cd = chamfer_distance(sphere(0.3), sphere(0.4), n=N, seed=0)
    assert cd == pytest.approx(0.1, abs=3e-3)


def test_chamfer_independent_samples_still_close():
    # a different tessellation decorrelates the samples: the NN distance then also sees the sample spacing
    cd = chamfer_distance(sphere(0.3, subdivisions=3), sphere(0.4, subdivisions=5), n=N, seed=1)
    assert cd == pytest.approx(0.1, abs=5e-3)


@pytest.mark.parametrize("workers", [-1, 1])
def test_nearest_neighbour_distances_equal_brute_force(workers):
    # the fast tree (pykdtree, OpenMP) against exhaustive search, points both on and off the sampled surface
    from scipy.spatial.distance import cdist

    from sculpt4d.metrics.distance import _nn_dist, sample_surface

    gt = sample_surface(sphere(0.3), 2000, seed=0)
    pred = sample_surface(sphere(0.35, (0.05, 0.0, 0.0)), 1500, seed=1)
    for src, dst in ((pred, gt), (gt, pred)):
        fast = _nn_dist(src, dst, workers)
        assert fast.dtype == np.float64 and fast.shape == (len(src.points),)
        np.testing.assert_allclose(fast, cdist(src.points, dst.points).min(axis=1), rtol=0, atol=1e-12)


def test_surface_samples_are_the_samplers_points_in_z_order():
    from sculpt4d.metrics.distance import morton_order, sample_surface

    mesh = sphere(0.3)
    raw, _ = trimesh.sample.sample_surface(mesh, 5000, seed=4)
    stored = sample_surface(mesh, 5000, seed=4).points
    np.testing.assert_array_equal(np.unique(stored, axis=0), np.unique(raw, axis=0))  # the same point set
    corners = np.array([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 1)], dtype=float)
    rng = np.random.default_rng(0)
    shuffled = corners[rng.permutation(8)]
    np.testing.assert_array_equal(shuffled[morton_order(shuffled)], corners)  # x fastest, then y, then z


def test_identical_meshes_zero_chamfer():
    assert chamfer_distance(sphere(0.3), sphere(0.3), n=N) == 0.0


@pytest.mark.parametrize("d", [0.05, 0.2])
def test_translated_sphere_chamfer_is_half_offset(d):
    # For a unit-area-uniform point on a sphere of radius r, the mean distance to the same sphere moved
    # by d <= r is (1/2)∫|sqrt(r²+d²-2rdu) - r| du = d/2 (u = cos θ uniform on [-1, 1]).
    r = 0.4
    cd = chamfer_distance(sphere(r), sphere(r, (d, 0.0, 0.0)), n=N, seed=3)
    assert cd == pytest.approx(d / 2, rel=0.02, abs=2e-3)  # NN to discrete samples biases up slightly


def test_fscore_threshold():
    inner, near, far = sphere(0.3), sphere(0.33), sphere(0.4)
    assert fscore(inner, near, tau=0.05, n=N) == pytest.approx(1.0)
    assert fscore(inner, far, tau=0.05, n=N) == pytest.approx(0.0)
    # translated by 0.1: points on the sides are close, the front/back ones are not
    assert 0.0 < fscore(sphere(0.3), sphere(0.3, (0.1, 0, 0)), tau=0.05, n=N) < 1.0


def test_volume_iou_concentric():
    r1, r2 = 0.3, 0.4
    iou = volume_iou(sphere(r1), sphere(r2), resolution=64)
    assert iou == pytest.approx((r1 / r2) ** 3, abs=0.02)
    assert volume_iou(sphere(r1), sphere(r1), resolution=32) == pytest.approx(1.0)


def test_volume_iou_non_watertight_prediction():
    # a sphere with a few faces removed is not watertight; winding numbers still see its inside
    holey = sphere(0.4)
    holey.update_faces(np.arange(len(holey.faces)) % 50 != 0)
    assert not holey.is_watertight
    assert volume_iou(holey, sphere(0.4), resolution=48) > 0.95


def test_volume_iou_inverted_orientation():
    inv = sphere(0.4)
    inv.invert()
    assert volume_iou(inv, sphere(0.4), resolution=32) == pytest.approx(1.0)


def test_volume_iou_disjoint_and_fixed_bounds():
    a, b = sphere(0.2, (-0.5, 0, 0)), sphere(0.2, (0.5, 0, 0))
    assert volume_iou(a, b, resolution=32) == 0.0
    box = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
    assert volume_iou(sphere(0.3), sphere(0.4), resolution=64, bounds=box) == pytest.approx(0.42, abs=0.04)


def test_static_sequence_zero_jitter():
    seq = [sphere(0.3)] * 4
    assert temporal_jitter(seq, seq, n=5000) == 0.0
    # a static prediction of a static (but different) truth: both have ~no motion
    assert temporal_jitter([sphere(0.35)] * 4, seq, n=5000) == 0.0


def test_jitter_sees_missing_motion():
    gt = [sphere(0.3, (0.05 * t, 0, 0)) for t in range(4)]
    static = [sphere(0.3)] * 4
    # gt moves 0.05 per frame -> consecutive CD = 0.025; the static prediction's is ~0
    assert temporal_jitter(static, gt, n=N) == pytest.approx(0.025, abs=2e-3)
    assert temporal_jitter(gt, gt, n=N) == 0.0


def test_normalize_sequence():
    seq = [sphere(0.5, (0, 0, 0)), sphere(0.5, (3.0, 0, 0))]
    center, scale = normalize_sequence(seq)
    np.testing.assert_allclose(center, [1.5, 0, 0], atol=1e-6)
    assert scale == pytest.approx(4.0, rel=1e-6)  # union bbox x-extent: -0.5 .. 3.5
    out = apply_normalization(seq, center, scale)
    allv = np.concatenate([m.vertices for m in out])
    assert allv.max(axis=0)[0] == pytest.approx(0.5) and allv.min(axis=0)[0] == pytest.approx(-0.5)
    assert np.abs(allv).max() <= 0.5 + 1e-9
    assert seq[0].vertices.max() == pytest.approx(0.5)  # inputs are untouched


def test_normalization_invariance():
    gts = [sphere(0.4, (0.02 * t, 0, 0)) for t in range(3)]
    preds = [sphere(0.37, (0.03 * t, 0.01, 0), subdivisions=3) for t in range(3)]
    k, shift = 7.5, np.array([3.0, -2.0, 1.0])

    def moved(ms):
        return [trimesh.Trimesh(m.vertices * k + shift, m.faces, process=False) for m in ms]

    a = evaluate_sequence(preds, gts, n_points=5000, iou_res=32)
    b = evaluate_sequence(moved(preds), moved(gts), n_points=5000, iou_res=32)
    for key in ("chamfer", "iou", "fscore", "jitter"):
        assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), key
    assert b["scale"] == pytest.approx(a["scale"] * k)


def test_evaluate_sequence_structure_and_values():
    gts = [sphere(0.4, (0.05 * t, 0, 0)) for t in range(3)]
    res = evaluate_sequence(gts, gts, n_points=4000, iou_res=24)
    assert set(res) >= {"chamfer", "iou", "fscore", "jitter", "per_frame"}
    assert len(res["per_frame"]) == 3
    assert res["chamfer"] == 0.0 and res["fscore"] == 1.0 and res["jitter"] == 0.0
    assert res["iou"] == pytest.approx(1.0)
    with pytest.raises(InputError):
        evaluate_sequence(gts[:2], gts, n_points=100, iou_res=8)


def test_degenerate_meshes_get_worst_values():
    empty = trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), dtype=int))
    flat = trimesh.Trimesh(vertices=np.zeros((3, 3)), faces=[[0, 1, 2]], process=False)  # zero area
    nan = sphere(0.3)
    nan = trimesh.Trimesh(np.full_like(nan.vertices, np.nan), nan.faces, process=False)
    s = sphere(0.3)
    for bad in (empty, flat, nan, None):
        assert chamfer_distance(bad, s, n=500) == WORST_CHAMFER
        assert fscore(bad, s, n=500) == 0.0
        assert volume_iou(bad, s, resolution=16) == 0.0
    assert chamfer_distance(empty, None, n=500) == 0.0
    assert volume_iou(empty, None, resolution=8) == 1.0
    res = evaluate_sequence([empty, s], [s, s], n_points=500, iou_res=16)
    assert res["per_frame"][0]["chamfer"] == WORST_CHAMFER
    assert res["per_frame"][0]["iou"] == 0.0 and res["per_frame"][0]["fscore"] == 0.0
    assert np.isfinite(res["jitter"])


def _closed_meshes() -> dict[str, trimesh.Trimesh]:
    knot = trimesh.creation.torus(0.3, 0.1)
    knot.apply_transform(trimesh.transformations.rotation_matrix(0.7, [1, 2, 0.5]))
    twins = trimesh.util.concatenate([sphere(0.2, (-0.2, 0, 0)), sphere(0.15, (0.25, 0.1, 0))])
    return {
        "icosphere": sphere(0.4, (0.013, -0.021, 0.007)),
        "box": trimesh.creation.box((0.5, 0.3, 0.7)),
        "tilted torus (a hole)": knot,
        "two components": twins,
        "capsule": trimesh.creation.capsule(0.4, 0.2),
    }


@pytest.mark.parametrize("name", list(_closed_meshes()))
@pytest.mark.parametrize("R", [17, 48])
def test_scanline_occupancy_equals_winding_numbers(name, R):
    mesh = _closed_meshes()[name]
    assert mesh.is_watertight
    bounds = default_bounds(mesh)
    fast = scanline_occupancy(mesh, bounds, R)
    ref = occupancy(mesh, grid_points(bounds, R))
    assert fast.shape == (R, R, R) and fast.any()
    assert np.array_equal(fast, ref)
    assert np.array_equal(occupancy_grid(mesh, bounds, R), ref)  # watertight -> the scanline path


def test_scanline_rays_through_edges_and_vertices_cross_once():
    # Columns at x, y = -0.25, -0.15, ..., 0.25 run exactly through the box's vertical faces, its corner
    # vertices and the diagonals of its triangulated top and bottom: every column must be inside for one
    # unbroken run of cells (a double or missed crossing would leave a streak outside or a gap inside).
    box = trimesh.creation.box((0.5, 0.5, 0.5))
    bounds = ((-0.5, -0.5, -0.53), (0.5, 0.5, 0.47))  # z centres -0.48 + 0.1 k: never on a face
    occ = scanline_occupancy(box, bounds, 10)
    z_inside = np.abs(grid_points(bounds, 10)[0, 0, :, 2]) < 0.25  # the 5 cells of the box's z range
    for col in occ.reshape(100, 10):
        assert not col.any() or np.array_equal(col, z_inside)
    ref = occupancy(box, grid_points(bounds, 10))
    strict = np.zeros((10, 10), dtype=bool)
    strict[3:7, 3:7] = True  # columns strictly inside the box's footprint
    assert np.array_equal(occ[strict], ref[strict]) and occ[strict][:, z_inside].all()
    assert occ.any(axis=2).sum() == 25  # of the 6 x 6 columns on or inside the footprint: 5 x 5 (tie rule)


def test_occupancy_grid_merges_split_vertices_before_choosing_the_path(monkeypatch):
    occ_mod = importlib.import_module(
        "sculpt4d.metrics.occupancy"
    )  # the package re-exports a function of that name

    split = trimesh.creation.box((0.5, 0.3, 0.7))
    split.unmerge_vertices()  # as a GLB mesh with per-face normals: 36 vertices, no shared edges
    assert not split.is_watertight
    bounds = default_bounds(split)
    ref = occupancy(split, grid_points(bounds, 20))
    monkeypatch.setattr(occ_mod, "occupancy", lambda *a: pytest.fail("took the winding-number fallback"))
    assert np.array_equal(occupancy_grid(split, bounds, 20), ref)
    assert len(split.vertices) == 36  # the caller's mesh is untouched


def test_occupancy_grid_of_an_open_mesh_uses_winding_numbers():
    holey = sphere(0.4)
    holey.update_faces(np.arange(len(holey.faces)) % 50 != 0)
    bounds = default_bounds(holey)
    assert np.array_equal(occupancy_grid(holey, bounds, 24), occupancy(holey, grid_points(bounds, 24)))
    assert occupancy_grid(None, bounds, 8).shape == (8, 8, 8) and not occupancy_grid(None, bounds, 8).any()


def test_ground_truth_prepared_once_scores_like_evaluate_sequence():
    gts = [sphere(0.4, (0.05 * t, 0, 0)) for t in range(3)]
    preds = [sphere(0.35, (0.03 * t, 0.02, 0), subdivisions=3) for t in range(3)]
    truth = prepare_ground_truth(gts, n_points=3000)
    assert len(truth.samples) == 3 and truth.consecutive.shape == (2,)
    a = score_sequence(preds, truth, iou_res=24)
    b = evaluate_sequence(preds, gts, n_points=3000, iou_res=24)
    for key in ("chamfer", "iou", "fscore", "jitter"):
        assert a[key] == b[key], key
    assert 0 < a["iou"] < 1 and a["jitter"] > 0
    with pytest.raises(InputError, match="2 predicted frames but 3"):
        score_sequence(preds[:2], truth)


def _reference_scores(preds, truth, iou_res, tau=0.05):
    """score_sequence's numbers computed the plain way: every mesh sampled and voxelised on its own."""
    from sculpt4d.metrics import (
        chamfer_fscore_from_samples,
        consecutive_chamfers,
        motion_iou,
        sample_surface,
        sequence_occupancy,
    )
    from sculpt4d.metrics.temporal import jitter_from_chamfers

    preds_n = apply_normalization(preds, truth.center, truth.scale)
    samples = [sample_surface(m, truth.n_points, truth.seed) for m in preds_n]
    cf = [chamfer_fscore_from_samples(s, g) for s, g in zip(samples, truth.samples)]
    ious = [volume_iou(p, g, resolution=iou_res) for p, g in zip(preds_n, truth.meshes)]
    res = truth.motion_occ.shape[-1]
    return dict(
        chamfer=float(np.mean([c for c, _ in cf])),
        fscore=float(np.mean([f for _, f in cf])),
        iou=float(np.mean(ious)),
        jitter=jitter_from_chamfers(consecutive_chamfers(samples), truth.consecutive),
        motion_iou=motion_iou(sequence_occupancy(preds_n, res), truth.motion_occ),
    )


def test_score_sequence_cache_gives_the_reference_numbers():
    """Repeated meshes, ground-truth copies and an open mesh: the memoised scoring equals the plain path."""
    from sculpt4d.metrics.occupancy import OCCUPANCY_PATHS

    gts = [sphere(0.4, (0.05 * t, 0, 0)) for t in range(3)]
    truth = prepare_ground_truth(gts, n_points=2000, motion_resolution=20)
    holey = sphere(0.35, (0.02, 0.0, 0.0), subdivisions=3)
    holey.update_faces(np.arange(len(holey.faces)) % 40 != 0)
    moving = [sphere(0.35, (0.03 * t, 0.02, 0), subdivisions=3) for t in range(2)] + [holey]
    cases = {
        "first_frame_repeat": [moving[0].copy() for _ in range(3)],
        "oracle_static": [gts[0].copy() for _ in range(3)],
        "moving_with_open_mesh": moving,
    }
    for name, preds in cases.items():
        before = OCCUPANCY_PATHS["winding"]
        got = score_sequence(preds, truth, iou_res=20)
        fallbacks = OCCUPANCY_PATHS["winding"] - before
        ref = _reference_scores(preds, truth, 20)
        for key, value in ref.items():
            assert got[key] == value, (name, key)
        # the open mesh's two grids (its frame's IoU box, the motion grid) take the winding-number fallback
        assert fallbacks == (2 if name == "moving_with_open_mesh" else 0), name
