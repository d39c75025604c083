"""Unit tests of the prep building blocks: cameras, renderer, watertighting, consistent sampling."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from sculpt4d.prep import sampling as S
from sculpt4d.prep.cameras import CameraRange, hammersley, look_at, project, sample_cameras, transforms_dict
from sculpt4d.prep.watertight import make_grid, watertight, winding_grid


def test_hammersley_seeded_and_in_range():
    a, b, c = hammersley(24, 0), hammersley(24, 0), hammersley(24, 1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == (24, 2) and (a >= 0).all() and (a < 1).all()


def test_cameras_look_at_origin_within_range():
    rng = CameraRange(elevation=(10, 35), azimuth=(-60, 60), radius=2.0)
    c2w = sample_cameras(16, rng, seed=3)
    eye = c2w[:, :3, 3]
    assert np.allclose(np.linalg.norm(eye, axis=1), 2.0)
    el = np.degrees(np.arcsin(eye[:, 1] / 2.0))
    az = np.degrees(np.arctan2(eye[:, 0], eye[:, 2]))
    assert (el >= 10 - 1e-6).all() and (el <= 35 + 1e-6).all()
    assert (az >= -60 - 1e-6).all() and (az <= 60 + 1e-6).all()
    # OpenGL convention: -Z of the camera points at the target, rotation is orthonormal
    fwd = -c2w[:, :3, 2]
    assert np.allclose(np.einsum("ij,ij->i", fwd, -eye / 2.0), 1.0)
    assert np.allclose(c2w[:, :3, :3] @ c2w[:, :3, :3].transpose(0, 2, 1), np.eye(3), atol=1e-9)
    tf = transforms_dict(c2w, 40.0, 64, 64)
    uv, depth = project(np.zeros((1, 3)), tf["frames"][0])
    assert np.allclose(uv, 32.0) and np.isclose(depth[0], 2.0)
    assert look_at(np.array([0, 3.0, 0]), np.zeros(3)).shape == (4, 4)  # straight down: no NaN
    assert np.isfinite(look_at(np.array([0, 3.0, 0]), np.zeros(3))).all()


@pytest.mark.parametrize("backend", ["pyrender", "embree"])
def test_render_matches_projection(backend):
    from sculpt4d.prep.multiview import Renderer

    m = trimesh.creation.box(extents=(0.6, 0.4, 0.3))
    c2w = sample_cameras(3, CameraRange(), seed=0)
    tf = transforms_dict(c2w, 40.0, 64, 64)
    colors = np.tile(np.array([[255, 0, 0, 255]], np.uint8), (len(m.vertices), 1))
    with Renderer(64, 40.0, backend=backend) as r:
        imgs = r.render(m.vertices, m.faces, colors, c2w)
    assert imgs.shape == (3, 64, 64, 4) and imgs.dtype == np.uint8
    for img, fr in zip(imgs, tf["frames"]):
        alpha = img[..., 3] > 0
        assert 0.02 < alpha.mean() < 0.9
        uv, _ = project(np.asarray(m.vertices), fr)
        ij = np.clip(uv.astype(int), 0, 63)
        from scipy import ndimage

        # silhouette corners are exactly the vertices: allow the pixel rounding of each backend
        assert ndimage.binary_dilation(alpha, iterations=2)[ij[:, 1], ij[:, 0]].all()
        assert img[alpha][:, 0].mean() > img[alpha][:, 1].mean() + 50  # coloured (red), not grey


def test_watertight_caps_holes_and_narrow_band_is_exact():
    m = trimesh.creation.icosphere(3, radius=0.4)
    m.vertices[:, 0] *= 1.2
    faces = m.faces[m.triangles_center[:, 0] < 0.35]  # open mesh with a big hole
    v, f = watertight(m.vertices, faces, grid_res=40)
    wm = trimesh.Trimesh(v, f)
    assert wm.is_watertight and wm.volume > 0
    g = make_grid(m.vertices, 40)
    dense = winding_grid(m.vertices, faces, g, narrow_band=False)
    band = winding_grid(m.vertices, faces, g, narrow_band=True)
    assert np.array_equal(dense > 0.5, band > 0.5)


def _box_frames():
    box = trimesh.creation.box(extents=(0.5, 0.3, 0.2))
    v0, f0 = np.asarray(box.vertices), np.asarray(box.faces)
    perm = np.random.default_rng(0).permutation(len(f0))
    shift = np.array([0.1, 0.0, 0.0])
    return [(v0, f0), (v0 + shift, f0), (v0 + shift, f0[perm]), (v0 + 2 * shift, f0[perm])]


def test_track_topology_change_reattaches_points():
    frames = _box_frames()
    wts = [watertight(v, f, 32) for v, f in frames]
    rng = np.random.default_rng(0)
    s = S.sample_uniform(*frames[0], 300, rng)
    tr = S.track(s, frames[0], frames, wts)
    assert tr.topology_changes == [2]
    # same geometry at frames 1 and 2: re-attachment keeps every point where it was
    assert np.abs(tr.points[2] - tr.points[1]).max() < 1e-6
    # rigid translation afterwards: point i moves by the translation (up to the watertight error)
    h = 0.5 / 25
    assert np.abs(tr.points[3] - tr.points[2] - [0.1, 0, 0]).max() < 2 * h
    for (wv, wf), p, n in zip(wts, tr.points, tr.normals):
        _, d, _ = trimesh.Trimesh(wv, wf, process=False).nearest.on_surface(p[:50])
        assert d.max() < 1e-6
        assert np.allclose(np.linalg.norm(n, axis=1), 1.0)


def test_sharp_samples_lie_on_sharp_edges():
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    s, n_edges = S.sample_sharp(box.vertices, box.faces, 500, np.random.default_rng(0), 30.0)
    assert n_edges == 12  # a cube's 12 edges (the diagonals of its faces are flat)
    p = s.points(box.vertices, box.faces)
    on_edge = np.isclose(np.abs(p), 0.5, atol=1e-9).sum(1) >= 2
    assert on_edge.all()
    sphere = trimesh.creation.icosphere(3)
    _, n0 = S.sample_sharp(sphere.vertices, sphere.faces, 10, np.random.default_rng(0), 30.0)
    assert n0 == 0  # smooth mesh: falls back to uniform


def test_sequence_normalisation_keeps_motion():
    a = np.array([[0.0, 0, 0], [1, 1, 1]])
    b = a + [2.0, 0, 0]
    c, s = S.sequence_normalisation([a, b])
    assert np.allclose(c, [1.5, 0.5, 0.5]) and s == 3.0
    na, nb = S.normalise(a, c, s), S.normalise(b, c, s)
    assert na.min() >= -0.5 and nb.max() <= 0.5 and np.allclose(nb - na, [2 / 3, 0, 0])
