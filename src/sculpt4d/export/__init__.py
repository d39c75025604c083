"""Export of generated sequences: per-frame OBJ, one animated GLB, preview renders, strip/turntable videos."""

from sculpt4d.export.glb import read_glb_animation, write_animated_glb
from sculpt4d.export.obj import write_obj, write_obj_sequence
from sculpt4d.export.preview import camera_pose, render_strip, render_turntable, render_views, sequence_bounds
from sculpt4d.export.video import (
    make_strip_image,
    strip_frames,
    to_rgb,
    write_strip_video,
    write_turntable_video,
    write_video,
)

__all__ = [
    "camera_pose",
    "make_strip_image",
    "read_glb_animation",
    "render_strip",
    "render_turntable",
    "render_views",
    "sequence_bounds",
    "strip_frames",
    "to_rgb",
    "write_animated_glb",
    "write_obj",
    "write_obj_sequence",
    "write_strip_video",
    "write_turntable_video",
    "write_video",
]
