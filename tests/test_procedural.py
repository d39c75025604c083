"""Procedural 4D assets: written as animated GLB, read back by our loader with the intended motion."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from sculpt4d.errors import InputError
from sculpt4d.prep.gltf_anim import load_animated_mesh
from sculpt4d.prep.procedural import BENCHMARK_SEED_OFFSET, CATEGORIES, generate_asset, generate_collection


def _kabsch(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """Best rotation R with b ~ R a + t; returns (R, RMS residual)."""
    a0, b0 = a - a.mean(0), b - b.mean(0)
    u, _, vt = np.linalg.svd(a0.T @ b0)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1, 1, d]) @ u.T
    return r, float(np.sqrt(((a0 @ r.T - b0) ** 2).sum(1).mean()))


def _angle_deg(r: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))


def _part(am, name: str) -> np.ndarray:
    (p,) = [p for p in am.extras["parts"] if p["name"] == name]
    return am.vertices[:, p["start"] : p["stop"]].astype(np.float64)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("proc")
    out = {}
    for c in CATEGORIES:
        meta = generate_asset(c, 7, d / f"{c}.glb")
        out[c] = (meta, load_animated_mesh(d / f"{c}.glb", num_frames=32))
    return out


@pytest.mark.parametrize("category", CATEGORIES)
def test_roundtrip_closed_unit_scale(assets, category):
    meta, am = assets[category]
    assert meta["category"] == category and am.vertices.shape[0] == 32
    v = am.vertices
    lo, hi = v.min((0, 1)), v.max((0, 1))
    assert np.abs(hi - lo).max() == pytest.approx(1.0, abs=2e-3)  # max extent 1 over the motion
    np.testing.assert_allclose((lo + hi) / 2, 0, atol=2e-3)  # centred
    assert meta["min_thickness"] >= 0.06
    assert am.vertex_colors is not None and len({tuple(c) for c in am.vertex_colors}) >= 2
    for t in (0, 31):
        mesh = trimesh.Trimesh(v[t], am.faces, process=False)
        assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert np.abs(v - v[:1]).max() > 0.1  # clearly visible motion
    scene = trimesh.load(meta["path"])  # third-party reader accepts it
    assert len(scene.geometry) >= 1


@pytest.mark.parametrize("category,part", [("door", "panel"), ("box", "lid"), ("gear", "gear")])
def test_rigid_part_rotation_matches_config(assets, category, part):
    meta, am = assets[category]
    v = _part(am, part)
    r, res = _kabsch(v[0], v[-1])
    assert res < 1e-4  # rigid
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    assert abs(abs(axis / np.linalg.norm(axis)) @ np.abs(meta["motion"]["axis"]) - 1) < 1e-3
    assert _angle_deg(r) == pytest.approx(
        abs(meta["motion"]["end_deg"] - meta["motion"]["start_deg"]), abs=0.2
    )
    mid, _ = _kabsch(v[0], v[16])
    assert 0.1 < _angle_deg(mid) < _angle_deg(r)  # halfway through the clip it is part-way open


def test_angle_plates_open_between_configured_angles(assets):
    meta, am = assets["angle"]
    norm = meta["normalisation"]
    hinge = -np.asarray(norm["centre"][:2]) * norm["scale"]  # raw hinge axis (x=y=0) after normalisation
    a, b = _part(am, "plate_a"), _part(am, "plate_b")
    for t, want in ((0, meta["motion"]["start_deg"]), (31, meta["motion"]["end_deg"])):
        da = a[t, :, :2].mean(0) - hinge  # hinge -> plate centre, in the plane normal to the hinge axis (z)
        db = b[t, :, :2].mean(0) - hinge
        got = np.degrees(np.arccos(da @ db / np.linalg.norm(da) / np.linalg.norm(db)))
        assert got == pytest.approx(want, abs=0.5)
    assert abs(meta["motion"]["end_deg"] - meta["motion"]["start_deg"]) > 100


def test_gear_has_ten_teeth(assets):
    meta, am = assets["gear"]
    v = _part(am, "gear")[0]
    norm = meta["normalisation"]
    axis_xy = -np.asarray(norm["centre"][:2]) * norm["scale"]  # raw axis (0, 0) after normalisation
    d = v[:, :2] - axis_xy
    r = np.linalg.norm(d, axis=1)
    assert r.max() == pytest.approx(meta["dims"]["r_tip"] * norm["scale"], rel=1e-4)
    tips = r > r.max() * 0.97  # only tooth-tip vertices lie on the outer circle
    ang = np.sort(np.degrees(np.arctan2(d[tips, 1], d[tips, 0])))
    gaps = np.diff(np.r_[ang, ang[0] + 360])
    assert int((gaps > 15).sum()) == 10 == meta["dims"]["n_teeth"]  # 10 angular clusters = 10 teeth
    assert abs(meta["motion"]["end_deg"]) >= 36


def test_figure_skin_bends_the_arm(assets):
    meta, am = assets["figure"]
    assert am.extras["skinned"]
    g = meta["parts"]["vertex_groups"]
    v = am.vertices.astype(np.float64)
    residual = {}
    for name in ("torso", "l_arm", "l_leg"):
        s, e = g[name]
        residual[name] = max(_kabsch(v[0, s:e], v[t, s:e])[1] for t in range(32))
    assert residual["torso"] < 1e-5 and residual["l_leg"] < 1e-5  # rigidly bound parts
    assert residual["l_arm"] > 0.01  # the elbow bends: the skin deforms the arm non-rigidly
    s, e = g["l_leg"]
    r, _ = _kabsch(v[0, s:e], v[8, s:e])  # quarter cycle: the leg swings
    assert _angle_deg(r) > 15


def test_seeds_are_deterministic_and_distinct(tmp_path):
    m1 = generate_asset("door", 3, tmp_path / "a.glb")
    m2 = generate_asset("door", 3, tmp_path / "b.glb")
    m3 = generate_asset("door", 4, tmp_path / "c.glb")
    assert (tmp_path / "a.glb").read_bytes() == (tmp_path / "b.glb").read_bytes()
    assert m1["dims"] == m2["dims"] and m1["dims"] != m3["dims"]
    assert generate_asset("chilun10", 1, tmp_path / "g.glb")["category"] == "gear"
    with pytest.raises(InputError, match="unknown procedural category"):
        generate_asset("teapot", 0, tmp_path / "t.glb")


def test_collection_and_benchmark_split(tmp_path):
    train = generate_collection(tmp_path / "train", ["box", "fatman"], 2)
    bench = generate_collection(tmp_path / "bench", ["box"], 1, seed_offset=BENCHMARK_SEED_OFFSET)
    assert [p.name for p in train] == [
        "box_000000.glb",
        "box_000001.glb",
        "figure_000000.glb",
        "figure_000001.glb",
    ]
    assert bench[0].name == f"box_{BENCHMARK_SEED_OFFSET:06d}.glb"
    index = json.loads((tmp_path / "train" / "index.json").read_text())
    assert [a["seed"] for a in index["assets"]] == [0, 1, 0, 1]
    assert all(p.is_file() for p in train + bench)
