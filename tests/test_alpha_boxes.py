"""Stored alpha boxes (``render_cond/alpha_boxes.json``): round trip, the dataset's sequence crop read from them,
malformed files named, and the backfill command."""

from __future__ import annotations

import json

import pytest

from sculpt4d.data.alpha_boxes import (
    boxes_file,
    boxes_from_pngs,
    main,
    read_alpha_boxes,
    write_alpha_boxes,
)
from sculpt4d.data.dataset import Objects4DDataset
from sculpt4d.data.records import BadObjectError, scan_object
from sculpt4d.utils.images import union_box


@pytest.fixture
def dataset(make_dataset, tmp_path):
    return make_dataset(tmp_path / "data", num_objects=2)


def _sequence_box(obj_dir, cam: int = 0):
    rec = scan_object(obj_dir, min_frames=1, need_images=True)
    ds = Objects4DDataset([rec], sequence_length=3, pc_size=32, preprocess_size=32, crop="sequence")
    return ds._sequence_box(rec, cam)


def test_boxes_round_trip_and_give_the_same_sequence_crop(dataset):
    obj = dataset / "obj_000"
    from_pngs = _sequence_box(obj)
    boxes = boxes_from_pngs(obj)
    assert len(boxes) == 6 and all(len(views) == 3 for views in boxes.values())
    write_alpha_boxes(obj, boxes)
    assert read_alpha_boxes(obj) == boxes
    assert _sequence_box(obj) == from_pngs == union_box([views["000.png"] for views in boxes.values()])


def test_the_dataset_takes_the_stored_boxes_and_reads_pngs_only_for_missing_ones(dataset):
    obj = dataset / "obj_000"
    boxes = boxes_from_pngs(obj)
    frames = sorted(boxes)
    stored = {f: {"000.png": (1, 2, 3, 4)} for f in frames[1:]}  # frame 0 missing: read from its PNG
    write_alpha_boxes(obj, stored)
    assert _sequence_box(obj) == union_box([boxes[frames[0]]["000.png"], (1, 2, 3, 4)])


def test_a_malformed_file_names_itself(dataset):
    obj = dataset / "obj_001"
    boxes_file(obj).write_text(json.dumps({"frames": {"frame_0000": {"000.png": [5, 1, 0, 3]}}}))
    with pytest.raises(BadObjectError, match="alpha_boxes.json"):
        read_alpha_boxes(obj)
    boxes_file(obj).write_text("{")
    with pytest.raises(BadObjectError, match="alpha_boxes.json"):
        _sequence_box(obj)
    assert read_alpha_boxes(dataset / "obj_000") is None  # no file: None, the PNGs are read


def test_backfill_writes_every_object(dataset, tmp_path, capsys):
    assert main([str(dataset), "--workers", "1"]) == 0
    for obj in ("obj_000", "obj_001"):
        assert read_alpha_boxes(dataset / obj) == boxes_from_pngs(dataset / obj)
    assert main([str(tmp_path / "missing")]) == 2
    assert "missing' does not exist" in capsys.readouterr().out
