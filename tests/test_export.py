"""Export: OBJ round trip, animated GLB structure, atomic writes, renders, strip GIF/MP4/PNG."""

from __future__ import annotations

import warnings

import numpy as np
import pygltflib
import pytest
import trimesh

from sculpt4d.errors import InputError
from sculpt4d.export import (
    make_strip_image,
    read_glb_animation,
    render_strip,
    render_turntable,
    write_animated_glb,
    write_obj_sequence,
    write_strip_video,
    write_video,
)
from sculpt4d.export import obj as obj_module


def moving_spheres(T: int = 4) -> list[trimesh.Trimesh]:
    return [
        trimesh.creation.icosphere(subdivisions=2, radius=0.3).apply_translation([0.1 * t, 0, 0])
        for t in range(T)
    ]


def mixed_sequence() -> list[trimesh.Trimesh]:
    """Frames with different topology, as per-frame marching cubes gives."""
    return [
        trimesh.creation.icosphere(subdivisions=1, radius=0.3),
        trimesh.creation.box((0.4, 0.5, 0.3)),
        trimesh.creation.capsule(0.4, 0.15),
    ]


def test_obj_sequence_round_trip(tmp_path):
    meshes = mixed_sequence()
    paths = write_obj_sequence(meshes, tmp_path / "out")
    assert [p.name for p in paths] == ["frame_0000.obj", "frame_0001.obj", "frame_0002.obj"]
    for m, p in zip(meshes, paths):
        back = trimesh.load(p, process=False, force="mesh")
        np.testing.assert_allclose(back.vertices, m.vertices, atol=1e-6)
        np.testing.assert_array_equal(back.faces, m.faces)
    assert sorted(x.name for x in (tmp_path / "out").iterdir()) == [p.name for p in paths]  # no temp files


def test_atomic_write_leaves_nothing_on_error(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "frame_0000.obj").write_text("old")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(obj_module.trimesh.exchange.obj, "export_obj", boom)
    with pytest.raises(RuntimeError):
        write_obj_sequence(moving_spheres(2), out)
    assert [x.name for x in out.iterdir()] == ["frame_0000.obj"]
    assert (out / "frame_0000.obj").read_text() == "old"  # the previous file is untouched

    def save_binary_fails(self, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("interrupted")  # fails mid-write, after the temp file exists

    monkeypatch.setattr(pygltflib.GLTF2, "save_binary", save_binary_fails)
    with pytest.raises(OSError):
        write_animated_glb(moving_spheres(2), out / "sequence.glb")
    assert [x.name for x in out.iterdir()] == ["frame_0000.obj"]


@pytest.mark.parametrize("fps", [8.0, 24.0])
def test_animated_glb_visibility(tmp_path, fps):
    meshes = mixed_sequence()
    T = len(meshes)
    path = write_animated_glb(meshes, tmp_path / "sequence.glb", fps=fps)

    gltf = pygltflib.GLTF2().load(str(path))
    assert len(gltf.nodes) == T and len(gltf.meshes) == T
    assert gltf.scenes[gltf.scene].nodes == list(range(T))
    assert [n.scale for n in gltf.nodes] == [[1, 1, 1]] + [[0, 0, 0]] * (T - 1)  # static viewers show frame 0
    assert len(gltf.animations) == 1
    anim = gltf.animations[0]
    assert len(anim.channels) == T
    assert {(c.target.node, c.target.path) for c in anim.channels} == {(t, "scale") for t in range(T)}
    assert {s.interpolation for s in anim.samplers} == {"STEP"}

    info = read_glb_animation(path)
    np.testing.assert_allclose(info["times"], np.arange(T + 1) / fps, rtol=1e-6)
    # node t is visible exactly on key t (and the last node also on the closing key)
    blob = gltf.binary_blob()
    for c in anim.channels:
        acc = gltf.accessors[anim.samplers[c.sampler].output]
        view = gltf.bufferViews[acc.bufferView]
        out = np.frombuffer(blob, np.float32, count=acc.count * 3, offset=view.byteOffset).reshape(-1, 3)
        expect = np.zeros(T + 1)
        expect[c.target.node] = 1
        if c.target.node == T - 1:
            expect[T] = 1
        np.testing.assert_array_equal(out[:, 0], expect)

    scene = trimesh.load(path)
    assert isinstance(scene, trimesh.Scene) and len(scene.geometry) == T
    got = sorted(len(g.faces) for g in scene.geometry.values())
    assert got == sorted(len(m.faces) for m in meshes)


def test_animated_glb_morph(tmp_path):
    meshes = moving_spheres(5)
    path = write_animated_glb(meshes, tmp_path / "m.glb", fps=10, mode="auto")
    gltf = pygltflib.GLTF2().load(str(path))
    assert len(gltf.nodes) == 1 and len(gltf.meshes) == 1
    prim = gltf.meshes[0].primitives[0]
    assert len(prim.targets) == 4
    info = read_glb_animation(path)
    assert info["channels"] == [(0, "weights")]
    np.testing.assert_allclose(info["times"], np.arange(5) / 10, rtol=1e-6)
    # base + target 3 reproduces frame 4
    blob = gltf.binary_blob()

    def read(idx):
        acc = gltf.accessors[idx]
        return np.frombuffer(
            blob, np.float32, count=acc.count * 3, offset=gltf.bufferViews[acc.bufferView].byteOffset
        ).reshape(-1, 3)

    np.testing.assert_allclose(
        read(prim.attributes.POSITION) + read(prim.targets[3]["POSITION"]), meshes[4].vertices, atol=1e-6
    )
    assert len(trimesh.load(path).geometry) == 1
    with pytest.raises(InputError):
        write_animated_glb(mixed_sequence(), tmp_path / "bad.glb", mode="morph")


def test_animated_glb_empty_frame_and_colors(tmp_path):
    empty = trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), dtype=int))
    meshes = [moving_spheres(1)[0], empty, trimesh.creation.box()]
    colors = [(1.0, 0.0, 0.0), (0, 1, 0), np.tile([0.0, 0.0, 1.0], (len(meshes[2].vertices), 1))]
    path = write_animated_glb(meshes, tmp_path / "e.glb", colors=colors)
    gltf = pygltflib.GLTF2().load(str(path))
    assert len(gltf.nodes) == 3 and gltf.nodes[1].mesh is None and len(gltf.meshes) == 2
    assert gltf.materials[0].pbrMetallicRoughness.baseColorFactor == [1.0, 0.0, 0.0, 1.0]
    assert gltf.meshes[1].primitives[0].attributes.COLOR_0 is not None
    assert len(read_glb_animation(path)["channels"]) == 3


def test_renders_fixed_and_turntable():
    meshes = moving_spheres(3)
    imgs = render_strip(meshes, size=64)
    assert len(imgs) == 3 and imgs[0].shape == (64, 64, 3) and imgs[0].dtype == np.uint8
    assert (imgs[0] == 255).all(axis=-1).mean() > 0.3  # white background
    assert (imgs[0] < 250).any(axis=-1).mean() > 0.05  # a grey object
    assert not np.array_equal(imgs[0], imgs[2])  # the fixed camera sees the motion
    splat = render_strip(meshes, size=64, backend="splat")
    mask_gl, mask_sp = (imgs[1] < 250).any(-1), (splat[1] < 250).any(-1)
    silhouette_iou = (mask_gl & mask_sp).sum() / (mask_gl | mask_sp).sum()
    assert silhouette_iou > 0.85  # both backends agree on the silhouette
    box = trimesh.creation.box((0.2, 0.6, 1.0))
    views = render_turntable(box, n_views=4, size=48)
    assert len(views) == 4
    widths = [(v < 250).any(-1).any(0).sum() for v in views]
    assert widths[0] != widths[1]  # the box shows different sides as it turns


def test_strip_video_gif_mp4_and_png(tmp_path):
    import imageio.v2 as iio2
    import imageio.v3 as iio

    meshes = moving_spheres(5)
    rng = np.random.default_rng(0)
    inputs = [rng.random((40, 30, 4)) for _ in range(7)]  # more inputs than meshes: the first 5 are used
    out = write_strip_video(inputs, meshes, tmp_path / "s.gif", tmp_path / "s.mp4", fps=5, size=64)
    gif = iio.imread(out["gif"])
    assert gif.shape[:3] == (5, 64, 128)
    reader = iio2.get_reader(out["mp4"])
    assert reader.count_frames() == 5
    assert reader.get_meta_data()["fps"] == pytest.approx(5)
    reader.close()

    png = make_strip_image(inputs, meshes, tmp_path / "strip.png", max_frames=3, size=32)
    assert iio.imread(png).shape[:2] == (64, 96)
    with pytest.raises(InputError):
        write_strip_video(inputs[:2], meshes, tmp_path / "x.gif", None)


def test_mp4_skipped_with_warning_when_ffmpeg_missing(tmp_path, monkeypatch):
    import imageio_ffmpeg

    def missing(*a, **k):
        raise RuntimeError("No ffmpeg exe could be found")

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", missing)
    frames = [np.full((16, 16, 3), 255 * (i % 2), np.uint8) for i in range(3)]
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = write_video(frames, tmp_path / "v.gif", tmp_path / "v.mp4", fps=3)
    assert out["mp4"] is None and out["gif"].exists()
    assert not (tmp_path / "v.mp4").exists()
    assert any("MP4 not written" in str(w.message) for w in rec)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.gif"]


def test_shared_renders_give_the_same_strip_image_and_video(tmp_path):
    """predict renders the meshes once for strip.png and the strip video: same pixels as rendering twice."""
    import imageio.v3 as iio

    from sculpt4d.export.video import strip_frames

    meshes = moving_spheres(3)
    inputs = [np.random.default_rng(t).random((40, 30, 4)) for t in range(3)]
    renders = render_strip(meshes, size=48)
    a = make_strip_image(inputs, meshes, tmp_path / "a.png", size=48)
    b = make_strip_image(inputs, meshes, tmp_path / "b.png", size=48, renders=renders)
    assert np.array_equal(iio.imread(a), iio.imread(b))
    for x, y in zip(strip_frames(inputs, meshes, 48), strip_frames(inputs, meshes, 48, renders=renders)):
        assert np.array_equal(x, y)
