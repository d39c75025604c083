"""Headless RGBA multi-view rendering of triangle meshes.

Two backends with one interface (`Renderer.render(vertices, faces, colors, c2w) -> [V, H, W, 4] uint8`):
- ``pyrender``: OpenGL through EGL (Mesa llvmpipe works without a GPU). One offscreen context per
  `Renderer`, reused for every frame and view of an object.
- ``embree``: GL-free ray casting (trimesh + embreex), flat Lambert shading; the fallback.

Shading: ``geometry`` = grey Lambert (the original release's geometry mode), ``color`` = the mesh's
vertex colours under the same lighting, ``auto`` = colour when the mesh has vertex colours.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # must be set before OpenGL/pyrender is imported

import math  # noqa: E402

import numpy as np  # noqa: E402
import trimesh  # noqa: E402

from sculpt4d.errors import MissingDependencyError  # noqa: E402

GREY = np.array([0.7, 0.7, 0.7])  # albedo of the geometry shading
AMBIENT = 0.3


def _albedo(colors: np.ndarray | None, n: int, shading: str) -> tuple[np.ndarray, bool]:
    """Per-vertex RGB albedo in [0, 1] and whether it is the plain grey.  # [n, 3]"""
    use_color = colors is not None and (shading == "color" or shading == "auto")
    if use_color:
        c = np.asarray(colors)
        c = c[:, :3].astype(np.float64) / (255.0 if c.dtype == np.uint8 else 1.0)
        return c, False
    return np.broadcast_to(GREY, (n, 3)).copy(), True


class Renderer:
    """Renders RGBA views of one object; create once per object and call per frame."""

    def __init__(
        self, resolution: int = 512, fov: float = 40.0, backend: str = "auto", shading: str = "auto"
    ):
        self.resolution, self.fov, self.shading = resolution, fov, shading
        self.backend = self._pick(backend)
        self._gl = None

    @staticmethod
    def _pick(backend: str) -> str:
        if backend in ("auto", "pyrender"):
            try:
                import pyrender  # noqa: F401

                return "pyrender"
            except Exception as e:  # ImportError or a missing libEGL
                if backend == "pyrender":
                    raise MissingDependencyError("pyrender", "GL rendering", "render.backend=embree") from e
        try:
            import embreex  # noqa: F401
        except ImportError as e:
            raise MissingDependencyError("embreex", "ray-cast rendering", "render.backend=pyrender") from e
        return "embree"

    def render(
        self, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, c2w: np.ndarray
    ) -> np.ndarray:
        """RGBA uint8 images of the mesh (vertices [N,3], faces [F,3], colors [N,3|4]|None) per camera [V,4,4]."""
        if self.backend == "pyrender":
            try:
                return self._render_gl(vertices, faces, colors, c2w)
            except Exception:  # EGL context failure on this machine: fall back once, for good
                self.close()
                self.backend = "embree"
        return self._render_rays(vertices, faces, colors, c2w)

    # ---- pyrender (EGL) -------------------------------------------------------------------------
    def _render_gl(self, vertices, faces, colors, c2w) -> np.ndarray:
        import pyrender

        if self._gl is None:
            r = self.resolution
            self._gl = pyrender.OffscreenRenderer(r, r)
        albedo, _ = _albedo(colors, len(vertices), self.shading)
        tm = trimesh.Trimesh(vertices, faces, process=False)
        tm.visual = trimesh.visual.ColorVisuals(tm, vertex_colors=(albedo * 255).astype(np.uint8))
        mesh = pyrender.Mesh.from_trimesh(tm, smooth=False)
        for prim in mesh.primitives:  # two-sided: thin/open glTF surfaces stay visible from behind
            prim.material.doubleSided = True
            prim.material.metallicFactor = 0.0
            prim.material.roughnessFactor = 1.0
        scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=[AMBIENT] * 3)
        scene.add(mesh)
        cam = pyrender.PerspectiveCamera(yfov=math.radians(self.fov), aspectRatio=1.0, znear=0.01, zfar=100.0)
        cam_node = scene.add(cam, pose=np.eye(4))
        light_node = scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=3.0), pose=np.eye(4))
        out = []
        for m in np.asarray(c2w):
            scene.set_pose(cam_node, m)
            scene.set_pose(light_node, m)  # head light
            rgba, _ = self._gl.render(scene, flags=pyrender.RenderFlags.RGBA)
            out.append(rgba)
        return np.stack(out)

    # ---- embree ray casting ------------------------------------------------------------------------
    def _render_rays(self, vertices, faces, colors, c2w) -> np.ndarray:
        from trimesh.ray.ray_pyembree import RayMeshIntersector

        r = self.resolution
        tm = trimesh.Trimesh(vertices, faces, process=False)
        caster = RayMeshIntersector(tm)
        albedo, _ = _albedo(colors, len(vertices), self.shading)
        face_albedo = albedo[faces].mean(axis=1)  # [F, 3]
        fn = tm.face_normals
        f = 0.5 * r / math.tan(0.5 * math.radians(self.fov))
        jj, ii = np.meshgrid(np.arange(r) + 0.5, np.arange(r) + 0.5)  # pixel centres (x, y)
        dirs_cam = np.stack([(jj - r / 2) / f, -(ii - r / 2) / f, -np.ones_like(jj)], -1).reshape(-1, 3)
        dirs_cam /= np.linalg.norm(dirs_cam, axis=1, keepdims=True)
        out = []
        for m in np.asarray(c2w):
            d = dirs_cam @ m[:3, :3].T
            o = np.broadcast_to(m[:3, 3], d.shape)
            hit = caster.intersects_first(o, d)  # [R*R] face index or -1
            img = np.zeros((r * r, 4), dtype=np.float64)
            ok = hit >= 0
            lam = np.abs(np.einsum("ij,ij->i", fn[hit[ok]], d[ok]))  # head light, two-sided
            img[ok, :3] = face_albedo[hit[ok]] * (AMBIENT + (1 - AMBIENT) * lam)[:, None]
            img[ok, 3] = 1.0
            out.append((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(r, r, 4))
        return np.stack(out)

    def close(self) -> None:
        if self._gl is not None:
            try:
                self._gl.delete()
            except Exception:
                pass
            self._gl = None

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
