"""End-to-end prep on small shared glTF assets + a procedural asset, at reduced sizes."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import trimesh

from sculpt4d.prep.meshio import list_frames, read_ply
from sculpt4d.prep.params import PrepParams
from sculpt4d.prep.runner import STAGES, process_object, run, shard_items
from sculpt4d.prep.watertight import watertight

ASSETS = Path(__file__).resolve().parent / "assets" / "gltf"  # vendored Khronos samples
NAMES = ["AnimatedMorphCube", "RiggedSimple", "BoxAnimated"]
P = PrepParams.from_config(num_frames=4, num_views=2, resolution=64, grid_res=48, pc_random=512, pc_sharp=256,
                           volume_size=512, render_backend="embree")  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from sculpt4d.prep.procedural import generate_asset

    src = tmp_path_factory.mktemp("src")
    generate_asset("gear", 0, src / "gear_000000.glb")
    (src / "corrupt.glb").write_bytes(b"glTF\x02\x00\x00\x00garbage")
    trimesh.creation.box().export(src / "static.glb")  # a GLB without animation
    inputs = [ASSETS / f"{n}.glb" for n in NAMES] + sorted(src.glob("*.glb"))
    out = tmp_path_factory.mktemp("out")
    results = run(inputs, out, P, workers=1, show_progress=False)
    return out, {r["name"]: r for r in results}


GOOD = NAMES + ["gear_000000"]


def test_failures_reported_not_fatal(prepared):
    out, res = prepared
    assert all(res[n]["status"] == "ok" for n in GOOD), {n: res[n].get("error") for n in GOOD}
    rep = json.loads((out / "prep_failures.json").read_text())
    failed = {f["name"]: f for f in rep["failed"]}
    assert set(failed) == {"corrupt", "static"} and rep["num_objects"] == 6
    assert failed["static"]["stage"] == "frames" and "anim" in failed["static"]["error"].lower()


@pytest.mark.parametrize("name", GOOD)
def test_npz_format_and_consistency(prepared, name):
    out, _ = prepared
    obj = out / name
    meta = json.loads((obj / "meta.json").read_text())
    with np.load(obj / "geo_data" / "4d_sample_new.npz", allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    keys = {f"frame_{t:04d}/{k}" for t in range(4) for k in ("random_surface", "sharp_surface")}
    assert set(data) == keys
    for k, a in data.items():
        n = 512 if k.endswith("random_surface") else 256
        assert a.dtype == np.float16 and a.shape == (n, 6)
        assert np.isfinite(a).all() and np.abs(a[:, :3]).max() <= 0.5
        assert np.allclose(np.linalg.norm(a[:, 3:].astype(np.float32), axis=1), 1.0, atol=5e-3)
    allp = np.concatenate([a[:, :3] for a in data.values()]).astype(np.float32)
    assert abs(float(np.ptp(allp, axis=0).max()) - 1.0) < 0.02  # one normalisation, longest side = 1
    # same topology in every frame (these assets do not change topology)
    faces = [read_ply(fd / "mesh.ply")[1] for fd in list_frames(obj)]
    assert all(np.array_equal(faces[0], f) for f in faces) and meta["topology_changes"] == []
    c, s = np.asarray(meta["sample_normalisation"]["centre"]), meta["sample_normalisation"]["scale"]
    h = 1.0 / (P.grid_res - 7)  # watertight grid spacing in mesh units (object fits the unit cube)
    prev, prev_v = None, None
    for t, fd in enumerate(list_frames(obj)):
        v, f, _ = read_ply(fd / "mesh.ply")
        wv, wf = watertight(v, f, P.grid_res)
        p = data[f"frame_{t:04d}/random_surface"][:, :3].astype(np.float64) * s + c
        _, d, _ = trimesh.Trimesh(wv, wf, process=False).nearest.on_surface(p)
        assert d.max() < 2e-3, f"frame {t}: points off the watertight surface by {d.max()}"
        if prev is not None and name in ("RiggedSimple", "gear_000000"):  # closed meshes: smooth tracks
            step = np.linalg.norm(p - prev, axis=1).max()
            assert step <= np.linalg.norm(v - prev_v, axis=1).max() + 3 * h
        prev, prev_v = p, v
    with np.load(obj / "geo_data" / "4d_volume.npz", allow_pickle=False) as z:
        assert set(z.files) == {f"frame_{t:04d}/{k}" for t in range(4) for k in ("points", "occupancy")}
        occ, pts = z["frame_0000/occupancy"], z["frame_0000/points"]
        assert (
            occ.dtype == np.uint8
            and occ.shape == (512,)
            and pts.dtype == np.float16
            and pts.shape == (512, 3)
        )
        assert 0 < occ.mean() < 1 and np.abs(pts[256:]).max() <= 0.55 + 1e-3


@pytest.mark.parametrize("name", GOOD)
def test_renders_agree_with_transforms(prepared, name):
    from PIL import Image
    from scipy import ndimage

    from sculpt4d.prep.cameras import project

    out, _ = prepared
    for fd in list_frames(out / name):
        tf = json.loads((fd / "transforms.json").read_text())
        assert {"camera_angle_x", "width", "height", "frames"} <= set(tf) and len(tf["frames"]) == 2
        v, _, _ = read_ply(fd / "mesh.ply")
        for fr in tf["frames"]:
            assert {"file_path", "transform_matrix", "fx", "fy", "cx", "cy"} <= set(fr)
            img = np.asarray(Image.open(fd / fr["file_path"]))
            assert img.shape == (64, 64, 4)
            uv, depth = project(v, fr)
            assert (depth > 0).all() and (uv >= 0).all() and (uv < 64).all()
            mask = ndimage.binary_dilation(img[..., 3] > 0, iterations=2)
            assert mask[uv[:, 1].astype(int), uv[:, 0].astype(int)].mean() > 0.97


@pytest.mark.parametrize("name", GOOD)
def test_render_stage_stores_the_alpha_box_of_every_render(prepared, name):
    from sculpt4d.data.alpha_boxes import boxes_from_pngs, read_alpha_boxes

    out, _ = prepared
    stored = read_alpha_boxes(out / name)
    assert stored == boxes_from_pngs(out / name)
    assert len(stored) == len(list_frames(out / name)) and all(len(views) == 2 for views in stored.values())


def test_verify_reports(prepared):
    out, res = prepared
    for name in GOOD:
        rep = json.loads((out / name / "verify" / "report.json").read_text())
        assert rep["ok"], rep["problems"]
        assert (out / name / "verify" / "snapshot.png").stat().st_size > 1000
        assert (out / name / "verify" / "report.txt").exists()


def _snapshot(obj: Path) -> dict[str, object]:
    snap: dict[str, object] = {}
    for f in sorted(obj.rglob("*")):
        if f.is_file() and ".done" not in f.parts and "verify" not in f.parts:
            rel = str(f.relative_to(obj))
            if f.suffix == ".npz":
                with np.load(f, allow_pickle=False) as z:
                    snap[rel] = {k: z[k].tobytes() for k in z.files}
            elif f.name == "meta.json":
                snap[rel] = json.loads(f.read_text())
            else:
                snap[rel] = f.read_bytes()
    return snap


def test_interrupted_run_resumes_identically(prepared, tmp_path):
    out, _ = prepared
    src = ASSETS / "RiggedSimple.glb"
    obj = tmp_path / "RiggedSimple"
    shutil.copytree(out / "RiggedSimple", obj)
    before = _snapshot(obj)
    # simulate a kill in the middle of render + sample: markers gone, partial files and temp files left
    for st in ("render", "sample", "verify"):
        (obj / ".done" / st).unlink()
    (obj / "render_cond" / "frame_0002" / "001.png").unlink()
    (obj / "render_cond" / "frame_0003" / ".000.abcd.tmp.png").write_bytes(b"partial")
    npz = obj / "geo_data" / "4d_sample_new.npz"
    npz.write_bytes(npz.read_bytes()[:100])  # a corrupt leftover
    (obj / "geo_data" / ".4d_volume.x1.tmp.npz").write_bytes(b"partial")
    r = process_object(src, tmp_path, P, STAGES)
    assert r["status"] == "ok" and r["skipped"] == ["frames"] and r["ran"] == ["render", "sample", "verify"]
    assert not list(obj.rglob("*.tmp*"))
    assert _snapshot(obj) == before
    r2 = process_object(src, tmp_path, P, STAGES)  # everything done: nothing reruns
    assert r2["ran"] == [] and r2["skipped"] == list(STAGES)


def test_shard_split_covers_all_once():
    items = [Path(f"/x/obj_{i:03d}.glb") for i in range(23)][::-1]
    shards = [shard_items(items, f"{i}/4") for i in range(4)]
    flat = [p for s in shards for p in s]
    assert sorted(flat) == sorted(items) and len(flat) == len(set(flat))
    assert shard_items(items, f"{1}/4") == shards[1]  # deterministic
    assert shard_items(items, None) == sorted(items)


def test_hydra_config_composes_without_submitit(tmp_path):
    from hydra import compose, initialize_config_dir

    from sculpt4d.errors import FailedObjectsError
    from sculpt4d.prep.__main__ import run_prep, shard_spec

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("prep", overrides=["input=x.glb", "shard=1", "shard_count=3"])
        assert shard_spec(cfg) == "1/3"
        p = PrepParams.from_config(cfg)
        assert (p.num_frames, p.num_views, p.resolution, p.grid_res, p.pc_random) == (32, 24, 512, 256, 40960)
        assert p.elevation == (-90.0, 90.0) and p.input_mode == "render"
        assert p == PrepParams.from_config()  # the file's defaults are the composed ones
        bad = tmp_path / "in"
        bad.mkdir()
        (bad / "broken.glb").write_bytes(b"nope")
        cfg = compose(
            "prep", overrides=[f"input={bad}", f"output_dir={tmp_path / 'o'}", "workers=1", "progress=false"]
        )
        with pytest.raises(FailedObjectsError, match="1 of 1 objects failed"):
            run_prep(cfg)  # exit status 1; the report stays
        cfg.allow_failures = True
        res = run_prep(cfg)
    assert res[0]["status"] == "failed"
    assert json.loads((tmp_path / "o" / "prep_failures.json").read_text())["num_failed"] == 1


def test_hybrid_mode_blender_rest_pose_or_clear_error(prepared, tmp_path):
    from sculpt4d.prep.blender_backend import blender_available

    out, _ = prepared
    obj = tmp_path / "RiggedSimple"
    shutil.copytree(out / "RiggedSimple", obj)
    p = replace(P, input_mode="hybrid")
    r = process_object(ASSETS / "RiggedSimple.glb", tmp_path, p, ("sample",))
    if not blender_available():
        assert r["status"] == "failed" and "MissingDependencyError" in r["error"] and "bpy" in r["error"]
        return
    assert r["status"] == "ok", r.get("error")
    meta = json.loads((obj / "meta.json").read_text())
    assert meta["input_mode"] == "hybrid"
    with np.load(obj / "geo_data" / "4d_sample_new.npz", allow_pickle=False) as z:
        a = z["frame_0003/random_surface"]
    assert a.shape == (512, 6) and np.isfinite(a).all() and np.abs(a[:, :3]).max() <= 0.5


def test_prep_params_come_from_the_config_only(tmp_path):
    """PrepParams has no defaults of its own: every field is the composed config's value or an override."""
    from dataclasses import MISSING, fields

    from hydra import compose, initialize_config_dir

    own = [f.name for f in fields(PrepParams) if f.default is not MISSING or f.default_factory is not MISSING]
    assert own == ["extra_meta"]  # not a setting: metadata a caller attaches
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        over = ["input=x.glb", "labels=exact", "pc_size=128", "camera.radius=2.0", "render.shading=geometry",
                "allow_static=true"]  # fmt: skip
        p = PrepParams.from_config(compose("prep", overrides=over))
    assert (p.labels, p.pc_random, p.pc_sharp, p.radius, p.shading, p.allow_static) == (
        "exact", 128, 128, 2.0, "geometry", True)  # fmt: skip
    q = PrepParams.from_config(num_views=3, seed=7)
    assert (q.num_views, q.seed) == (3, 7)
    assert asdict(replace(q, num_views=24, seed=0)) == asdict(PrepParams.from_config())
    with pytest.raises(TypeError):
        PrepParams.from_config(num_view=3)  # a typo fails
