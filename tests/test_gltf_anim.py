"""Animated GLB -> per-frame meshes: checked against hand-computed glTF semantics on the shared assets."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from sculpt4d.errors import InputError
from sculpt4d.prep.gltf_anim import evaluate_channel, list_clips, load_animated_mesh
from sculpt4d.prep.gltf_io import GltfDocument

ASSETS = Path(__file__).resolve().parent / "assets" / "gltf"  # vendored Khronos samples (see its README)

INTERP = ASSETS / "InterpolationTest.glb"


def _part(am, node: int) -> np.ndarray:
    """Vertices [T, V, 3] of the mesh instance at ``node``."""
    (p,) = [p for p in am.extras["parts"] if p["node"] == node]
    return am.vertices[:, p["start"] : p["stop"]]


def _rest(path: Path, mesh: int) -> np.ndarray:
    doc = GltfDocument(path)
    return doc.accessor(doc.json["meshes"][mesh]["primitives"][0]["attributes"]["POSITION"]).astype(
        np.float64
    )


def _keys(clip: str) -> tuple[np.ndarray, np.ndarray]:
    """Keyframe times [K] and outputs of the (single) sampler of an InterpolationTest clip."""
    doc = GltfDocument(INTERP)
    (anim,) = [a for a in doc.json["animations"] if a["name"] == clip]
    smp = anim["samplers"][0]
    return doc.accessor(smp["input"])[:, 0].astype(np.float64), doc.accessor(smp["output"]).astype(np.float64)


# ------------------------------------------------------------------ sampler semantics (InterpolationTest)
def test_step_translation_holds_previous_key():
    # Keys t ~ [0, .4583, .8333, 1.2917, 1.7083], y ~ [6.665, 10, 6, 10, 6]; node 8 (mesh 6).
    keys, out = _keys("Step Translation")
    y = out[:, 1]
    times = np.array([0.2, keys[1], keys[1] + 0.01, keys[2] - 1e-3, keys[2] + 0.01, 5.0])
    am = load_animated_mesh(INTERP, clip="Step Translation", times=times)
    centre_y = _part(am, 8).mean(axis=1)[:, 1] - _rest(INTERP, 6).mean(0)[1]
    np.testing.assert_allclose(centre_y, [y[0], 10, 10, 10, 6, 6], atol=1e-4)


def test_linear_and_cubic_translation_midpoints():
    # Keys .4167 -> .8333: y 10 -> 6. At s=0.25: linear 9.0; cubic with zero tangents 0.84375*10+0.15625*6 = 9.375.
    keys, _ = _keys("Linear Translation")
    assert np.allclose(keys, _keys("CubicSpline Translation")[0])
    t = keys[1] + 0.25 * (keys[2] - keys[1])
    lin = load_animated_mesh(INTERP, clip="Linear Translation", times=np.array([t]))
    cub = load_animated_mesh(INTERP, clip="CubicSpline Translation", times=np.array([t]))
    assert abs(_part(lin, 10).mean(1)[0, 1] - _rest(INTERP, 8).mean(0)[1] - 9.0) < 1e-4
    assert abs(_part(cub, 9).mean(1)[0, 1] - _rest(INTERP, 7).mean(0)[1] - 9.375) < 1e-4


def test_scale_step_linear_cubic_and_clamping():
    # Scale keys at [.0417, .4167, .875, 1.25, 1.6667]: 1, .5, 1, .5, 1. Node 0 has no translation.
    keys, _ = _keys("Step Scale")
    t = keys[0] + 0.25 * (keys[1] - keys[0])
    step = load_animated_mesh(INTERP, clip="Step Scale", times=np.array([0.0, t, 0.5]))
    rest0 = _rest(INTERP, 0)
    np.testing.assert_allclose(_part(step, 0)[0], rest0, atol=1e-5)  # before first key: clamped to it
    np.testing.assert_allclose(_part(step, 0)[1], rest0, atol=1e-5)
    np.testing.assert_allclose(_part(step, 0)[2], 0.5 * rest0, atol=1e-5)
    lin = load_animated_mesh(INTERP, clip="Linear Scale", times=np.array([t]))
    cub = load_animated_mesh(INTERP, clip="CubicSpline Scale", times=np.array([t]))
    off3 = np.array([-3.2963297367095947, 0, 6.461143493652344e-05])
    off4 = np.array([3.3401193618774414, 0, 0.008944988250732422])
    np.testing.assert_allclose(_part(lin, 3)[0], 0.875 * _rest(INTERP, 1) + off3, atol=1e-4)
    np.testing.assert_allclose(_part(cub, 4)[0], 0.921875 * _rest(INTERP, 2) + off4, atol=1e-4)


def test_linear_rotation_is_slerp():
    # Node 7: identity -> (0,0,-.383,.924) (= -45 deg about z) over [0, .4167]; halfway = -22.5 deg.
    keys, out = _keys("Linear Rotation")
    am = load_animated_mesh(INTERP, clip="Linear Rotation", times=np.array([0.5 * keys[1]]))
    q1 = out[1]
    half = Rotation.from_quat(q1 / np.linalg.norm(q1)).as_rotvec() / 2
    expect = Rotation.from_rotvec(half).apply(_rest(INTERP, 5)) + [-3.311399221420288, 3.356412410736084, 0]
    np.testing.assert_allclose(_part(am, 7)[0], expect, atol=1e-4)


def test_cubic_rotation_hits_keys_and_is_normalised():
    inp = np.array([0.0, 1.0])
    # in-tangent, value, out-tangent per key; non-unit Hermite result must be normalised
    out = np.array(
        [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]], float
    )
    r = evaluate_channel(inp, out, "CUBICSPLINE", np.array([0.0, 0.5, 1.0]), rotation=True)
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(r[0], [0, 0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(r[2], np.array([0, 0, 1, 1]) / np.sqrt(2), atol=1e-9)


def test_list_clips_and_selection():
    clips = list_clips(INTERP)
    assert len(clips) == 9 and {c["name"] for c in clips} >= {"Step Scale", "CubicSpline Rotation"}
    fox = ASSETS / "Fox.glb"
    assert [c["name"] for c in list_clips(fox)] == ["Survey", "Walk", "Run"]
    assert load_animated_mesh(fox, num_frames=2).clip_name == "Survey"  # longest by default
    walk = load_animated_mesh(fox, num_frames=4, clip="Walk")
    assert walk.clip_name == "Walk" and load_animated_mesh(fox, num_frames=4, clip=1).clip_name == "Walk"
    np.testing.assert_allclose(walk.times, np.linspace(0, 0.7083, 4), atol=1e-3)
    with pytest.raises(InputError, match="Jump.*available"):
        load_animated_mesh(fox, clip="Jump")


# ------------------------------------------------------------------ morph, skin, rigid
def test_morph_weights_at_keyframe_are_exact():
    path = ASSETS / "AnimatedMorphCube.glb"
    doc = GltfDocument(path)
    smp = doc.json["animations"][0]["samplers"][0]
    inp = doc.accessor(smp["input"])[:, 0].astype(np.float64)
    w = doc.accessor(smp["output"]).reshape(len(inp), -1).astype(np.float64)  # [K, 2]
    prim = doc.json["meshes"][0]["primitives"][0]
    base = doc.accessor(prim["attributes"]["POSITION"]).astype(np.float64)
    deltas = [doc.accessor(t["POSITION"]).astype(np.float64) for t in prim["targets"]]
    node = doc.json["nodes"][0]  # rotation + scale 100 on the node
    to_world = Rotation.from_quat(node["rotation"]).as_matrix() * np.asarray(node["scale"])[None]
    ks = [0, 30, 60, 100]
    am = load_animated_mesh(path, times=inp[ks])
    for i, k in enumerate(ks):
        expect = (base + w[k, 0] * deltas[0] + w[k, 1] * deltas[1]) @ to_world.T
        np.testing.assert_allclose(am.vertices[i], expect, atol=1e-5)
    assert np.ptp(am.vertices.max(1), axis=0).max() > 1.0  # the shape visibly changes (cube is 2 units)


def _node_world(doc: GltfDocument, node: int, values: dict[tuple[int, str], np.ndarray]) -> np.ndarray:
    """Independent world transform of ``node`` (scipy rotations), using key values ``values``."""
    parents = {c: i for i, n in enumerate(doc.json["nodes"]) for c in n.get("children", [])}
    chain = [node]
    while chain[-1] in parents:
        chain.append(parents[chain[-1]])
    m = np.eye(4)
    for ni in reversed(chain):
        n = doc.json["nodes"][ni]
        if "matrix" in n:
            m = m @ np.asarray(n["matrix"], np.float64).reshape(4, 4).T
            continue
        t = values.get((ni, "translation"), np.array(n.get("translation", [0, 0, 0])))
        r = values.get((ni, "rotation"), np.array(n.get("rotation", [0, 0, 0, 1])))
        s = values.get((ni, "scale"), np.array(n.get("scale", [1, 1, 1])))
        local = np.eye(4)
        local[:3, :3] = Rotation.from_quat(r).as_matrix() @ np.diag(s)
        local[:3, 3] = t
        m = m @ local
    return m


@pytest.mark.parametrize("name", ["RiggedSimple.glb", "CesiumMan.glb"])
def test_skinned_vertex_follows_its_joint(name):
    path = ASSETS / name
    doc = GltfDocument(path)
    anim = doc.json["animations"][0]
    k = 7  # a keyframe index: every channel of these clips shares one input accessor
    values, key_t = {}, None
    for ch in anim["channels"]:
        smp = anim["samplers"][ch["sampler"]]
        inp = doc.accessor(smp["input"])[:, 0].astype(np.float64)
        key_t = inp[k] if key_t is None else key_t
        assert inp[k] == key_t
        values[(ch["target"]["node"], ch["target"]["path"])] = doc.accessor(smp["output"])[k].astype(
            np.float64
        )
    (mesh_node,) = [i for i, n in enumerate(doc.json["nodes"]) if "skin" in n]
    skin = doc.json["skins"][doc.json["nodes"][mesh_node]["skin"]]
    attrs = doc.json["meshes"][doc.json["nodes"][mesh_node]["mesh"]]["primitives"][0]["attributes"]
    joints = doc.accessor(attrs["JOINTS_0"], normalize=False)
    weights = doc.accessor(attrs["WEIGHTS_0"])
    pos = doc.accessor(attrs["POSITION"]).astype(np.float64)
    ibm = doc.accessor(skin["inverseBindMatrices"]).astype(np.float64)
    full = np.where(weights.max(1) > 0.9999)[0]
    assert len(full) > 0
    am = load_animated_mesh(path, times=np.array([key_t]))
    rng = np.random.default_rng(0)
    for v in rng.choice(full, size=min(10, len(full)), replace=False):
        slot = int(np.argmax(weights[v]))
        j = int(joints[v, slot])
        m = _node_world(doc, skin["joints"][j], values) @ ibm[j]
        expect = (m @ np.append(pos[v], 1.0))[:3]
        np.testing.assert_allclose(am.vertices[0, v], expect, atol=1e-4)


def test_cesiumman_same_topology_and_motion():
    am = load_animated_mesh(ASSETS / "CesiumMan.glb", num_frames=32)
    assert am.vertices.shape == (32, 3273, 3) and am.vertices.dtype == np.float32
    assert am.faces.shape == (4672, 3) and am.faces.dtype == np.int64 and am.faces.max() < 3273
    assert am.extras["skinned"] and am.texture is not None and am.uvs.shape == (3273, 2)
    disp = np.linalg.norm(am.vertices - am.vertices[:1], axis=-1).max(1)  # [T] max displacement from frame 0
    assert disp[16] > 0.1  # limbs swing during the walk cycle
    assert np.isfinite(am.vertices).all()


def test_boxanimated_parts_move_rigidly():
    am = load_animated_mesh(ASSETS / "BoxAnimated.glb", num_frames=16)
    assert am.extras["num_instances"] == 2
    moved = []
    for p in am.extras["parts"]:
        v = am.vertices[:, p["start"] : p["stop"]].astype(np.float64)
        d0 = np.linalg.norm(v[0, :50, None] - v[0, None, :50], axis=-1)
        for t in range(16):  # rigid: pairwise distances are preserved
            np.testing.assert_allclose(
                np.linalg.norm(v[t, :50, None] - v[t, None, :50], axis=-1), d0, atol=1e-4
            )
        moved.append(np.abs(v - v[:1]).max())
    assert max(moved) > 0.5
    bbox = np.stack([am.vertices.min(1), am.vertices.max(1)], 1)  # [T, 2, 3]
    assert np.abs(bbox - bbox[:1]).max() > 0.5


def test_instanced_truck_and_colours():
    am = load_animated_mesh(ASSETS / "CesiumMilkTruck.glb", num_frames=4)
    assert am.extras["num_instances"] == 3 and am.vertices.shape[1] == 4823  # wheels instanced twice
    assert am.vertex_colors is not None and am.vertex_colors.shape == (4823, 4)
    assert am.face_material.shape == (len(am.faces),) and len(np.unique(am.face_material)) >= 2


# ------------------------------------------------------------------ errors
def _write_glb(path: Path, doc: dict, blob: bytes = b"") -> Path:
    js = json.dumps(doc).encode()
    js += b" " * (-len(js) % 4)
    blob += b"\0" * (-len(blob) % 4)
    chunks = struct.pack("<II", len(js), 0x4E4F534A) + js
    if blob:
        chunks += struct.pack("<II", len(blob), 0x004E4942) + blob
    path.write_bytes(struct.pack("<III", 0x46546C67, 2, 12 + len(chunks)) + chunks)
    return path


def _static_triangle(path: Path) -> Path:
    pos = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32).tobytes()
    doc = {
        "asset": {"version": "2.0"},
        "buffers": [{"byteLength": len(pos)}],
        "bufferViews": [{"buffer": 0, "byteLength": len(pos)}],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": 3,
                "type": "VEC3",
                "min": [0, 0, 0],
                "max": [1, 1, 0],
            }
        ],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
        "nodes": [{"mesh": 0, "translation": [0, 0, 2]}],
        "scenes": [{"nodes": [0]}],
    }
    return _write_glb(path, doc, pos)


def test_errors_name_the_file_and_problem(tmp_path):
    junk = tmp_path / "junk.glb"
    junk.write_bytes(b"not a gltf file at all")
    with pytest.raises(InputError, match="junk.glb"):
        load_animated_mesh(junk)
    trunc = tmp_path / "trunc.glb"
    trunc.write_bytes((ASSETS / "BoxAnimated.glb").read_bytes()[:3000])
    with pytest.raises(InputError, match="trunc.glb.*truncated"):
        load_animated_mesh(trunc)
    empty = _write_glb(
        tmp_path / "empty.glb", {"asset": {"version": "2.0"}, "nodes": [{}], "scenes": [{"nodes": [0]}]}
    )
    with pytest.raises(InputError, match="no meshes"):
        load_animated_mesh(empty)
    with pytest.raises(InputError, match="not found"):
        load_animated_mesh(tmp_path / "missing.glb")


def test_static_glb_needs_allow_static(tmp_path):
    path = _static_triangle(tmp_path / "static.glb")
    with pytest.raises(InputError, match="static.glb.*no animation.*allow_static"):
        load_animated_mesh(path)
    am = load_animated_mesh(path, num_frames=5, allow_static=True)
    assert am.vertices.shape == (5, 3, 3) and am.clip_name is None
    np.testing.assert_allclose(am.vertices[4], [[0, 0, 2], [1, 0, 2], [0, 1, 2]])
