"""Hue jitter of the training images (``data.hue_jitter``): the rotation keeps greys and luma, turns colours, and
is one rotation per clip."""

from __future__ import annotations

import pytest
import torch

from sculpt4d.data.dataset import Objects4DDataset, rotate_hue
from sculpt4d.data.records import scan_object

LUMA = torch.tensor([0.299, 0.587, 0.114])


def _colours() -> torch.Tensor:
    """Muted in-gamut colours ``[3, 4, 4]`` in [-1, 1] (so no rotation below clips)."""
    g = torch.Generator().manual_seed(0)
    return (torch.rand(3, 4, 4, generator=g) - 0.5) * 0.6


def test_zero_and_full_turns_are_the_identity_and_opposite_turns_cancel():
    x = _colours()
    torch.testing.assert_close(rotate_hue(x, 0.0), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(rotate_hue(x, 360.0), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate_hue(rotate_hue(x, 50.0), -50.0), x, atol=1e-5, rtol=0)


def test_greys_and_luma_stay_and_colours_turn():
    greys = torch.linspace(-1, 1, 5).view(1, 5, 1).expand(3, 5, 1)  # white background included
    torch.testing.assert_close(rotate_hue(greys, 73.0), greys, atol=1e-6, rtol=0)
    x = _colours()
    luma = torch.einsum("c,chw->hw", LUMA, x)
    torch.testing.assert_close(torch.einsum("c,chw->hw", LUMA, rotate_hue(x, 73.0)), luma, atol=1e-5, rtol=0)
    teal = torch.tensor([-0.8, 0.2, 0.6]).view(3, 1, 1)
    r, g, b = rotate_hue(teal, -70.0).flatten().tolist()
    assert g > b and g > r  # teal turns green


def test_the_dataset_turns_every_frame_of_a_clip_by_the_same_angle(make_dataset, tmp_path):
    obj = make_dataset(tmp_path / "data", num_objects=1) / "obj_000"
    rec = scan_object(obj, min_frames=1, need_images=True)
    kw = dict(sequence_length=3, pc_size=32, preprocess_size=32, random_start=False, camera=0)
    plain = Objects4DDataset([rec], **kw)[(0, 5)]["images"]  # [T, 3, S, S]
    jittered = Objects4DDataset([rec], hue_jitter=90.0, **kw)[(0, 5)]["images"]
    assert not torch.allclose(plain, jittered, atol=1e-3)  # colours changed
    angles = torch.linspace(-90, 90, 721)
    errors = torch.stack([(rotate_hue(plain, float(a)) - jittered).abs().amax() for a in angles])
    assert errors.min() < 2e-3  # one angle explains all T frames at once
    again = Objects4DDataset([rec], hue_jitter=90.0, **kw)[(0, 5)]["images"]
    torch.testing.assert_close(again, jittered)  # the item's seed draws the angle


def test_hue_jitter_outside_half_a_turn_is_refused(make_dataset, tmp_path):
    obj = make_dataset(tmp_path / "data", num_objects=1) / "obj_000"
    rec = scan_object(obj, min_frames=1, need_images=True)
    with pytest.raises(ValueError, match="hue_jitter"):
        Objects4DDataset([rec], sequence_length=3, hue_jitter=200.0)
