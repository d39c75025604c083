"""Inputs shared by ``predict.py`` and the web app: frames, videos, zips and file lists, with masks."""

from sculpt4d.inputs.frames import Frames, Limits, load_frames
from sculpt4d.inputs.matting import MODES, remove_background
from sculpt4d.inputs.video_decode import VIDEO_SUFFIXES

__all__ = ["MODES", "VIDEO_SUFFIXES", "Frames", "Limits", "load_frames", "remove_background"]
