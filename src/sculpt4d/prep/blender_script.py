"""Runs INSIDE Blender's Python (bpy, numpy<2): import a glTF, step its animation, save per-frame meshes.

    <blender-venv>/bin/python blender_script.py --input x.glb --num-frames 32 --out frames.npz [--clip NAME]

Writes an npz with ``vertices`` [T,V,3] float32 (glTF axes: +Y up), ``faces`` [F,3] int64, ``frames`` [T]
(Blender frame numbers, fractional), ``times`` [T] seconds (frame / fps), ``clip`` and ``objects``.
Only the standard library, numpy and bpy may be imported here (no sculpt4d).
"""

from __future__ import annotations

import argparse
import sys

import bpy  # type: ignore[import-not-found]
import numpy as np


def _animated_ids():
    """Every datablock with animation data: objects and shape-key blocks (morph targets)."""
    for ob in bpy.data.objects:
        if ob.animation_data is not None:
            yield ob
    for key in bpy.data.shape_keys:
        if key.animation_data is not None:
            yield key


def _clip_actions(clip: str | None) -> tuple[str, list]:
    """Actions of the requested glTF animation (default: the longest), matched by name or name prefix."""
    actions = list(bpy.data.actions)
    if not actions:
        raise SystemExit("ERROR: the file has no animation")
    # Blender >= 4.4 imports one (slotted) action per glTF animation; older versions "<anim>_<node>".
    groups: dict[str, list] = {}
    for act in actions:
        groups.setdefault(act.name, []).append(act)
    if clip is None:
        best = max(groups, key=lambda n: groups[n][0].frame_range[1] - groups[n][0].frame_range[0])
        return best, groups[best]
    if clip in groups:
        return clip, groups[clip]
    pref = [a for a in actions if a.name.startswith(clip + "_")]
    if not pref:
        raise SystemExit(f"ERROR: no animation named {clip!r}; actions: {[a.name for a in actions]}")
    return clip, pref


def _assign(acts: list) -> None:
    """Make ``acts`` the active actions of every animated datablock, with NLA evaluation off."""
    for idb in _animated_ids():
        ad = idb.animation_data
        for act in acts:
            slots = getattr(act, "slots", None)
            if slots is not None and len(slots):  # slotted actions (Blender >= 4.4)
                match = [s for s in slots if s.target_id_type == idb.id_type and idb.name in s.identifier[2:]]
                if not match:
                    continue
                ad.action = act
                ad.action_slot = match[0]
            else:
                ad.action = act  # legacy: per-node actions; a wrong match simply animates nothing
        ad.use_nla = False


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--num-frames", type=int, default=32)
    ap.add_argument("--clip", default=None)
    args = ap.parse_args(argv)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=args.input)
    scene = bpy.context.scene
    name, acts = _clip_actions(args.clip)
    _assign(acts)
    lo = min(a.frame_range[0] for a in acts)
    hi = max(a.frame_range[1] for a in acts)  # NOT scene.frame_end (stays 250 after import)
    fps = scene.render.fps / scene.render.fps_base
    frames = np.linspace(lo, hi, args.num_frames)
    shapes = {pb.custom_shape for o in scene.objects if o.type == "ARMATURE" for pb in o.pose.bones}
    meshes = sorted((o for o in scene.objects if o.type == "MESH" and o not in shapes), key=lambda o: o.name)
    if not meshes:
        raise SystemExit("ERROR: no mesh objects after import")
    to_gltf = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], np.float64)  # Blender Z-up -> glTF Y-up
    verts, faces = [], None
    for f in frames:
        scene.frame_set(int(np.floor(f)), subframe=float(f - np.floor(f)))
        dg = bpy.context.evaluated_depsgraph_get()
        vs, fs, off = [], [], 0
        for ob in meshes:
            ev = ob.evaluated_get(dg)
            me = ev.to_mesh()
            me.calc_loop_triangles()
            co = np.empty(len(me.vertices) * 3, np.float64)
            me.vertices.foreach_get("co", co)
            tri = np.empty(len(me.loop_triangles) * 3, np.int64)
            me.loop_triangles.foreach_get("vertices", tri)
            mw = np.array(ev.matrix_world, np.float64)
            co = co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3]
            vs.append(co @ to_gltf.T)
            fs.append(tri.reshape(-1, 3) + off)
            off += len(co)
            ev.to_mesh_clear()
        fr_faces = np.concatenate(fs)
        if faces is None:
            faces = fr_faces
        elif fr_faces.shape != faces.shape or not np.array_equal(fr_faces, faces):
            raise SystemExit("ERROR: topology changes between frames")
        verts.append(np.concatenate(vs))
    np.savez(
        args.out,
        vertices=np.stack(verts).astype(np.float32),
        faces=faces,
        frames=frames,
        times=frames / fps,
        clip=np.array(name),
        objects=np.array([o.name for o in meshes]),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
