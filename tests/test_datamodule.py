"""Objects4DDataModule on the synthetic fixture: shapes, correspondence, camera, split, determinism, bad objects."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sculpt4d.data import POINT_SCALE, Objects4DDataModule, SeededStreamSampler, split_by_object
from sculpt4d.data.records import BadObjectError


def _dm(root, **kw) -> Objects4DDataModule:
    args = dict(
        root=str(root),
        sequence_length=4,
        pc_size=256,
        pc_sharpedge_size=64,
        num_volume_points=128,
        preprocess_size=32,
        image_size=28,
        batch_size=2,
        num_val_objects=1,
        seed=3,
        load_volume=True,
    )
    args.update(kw)
    dm = Objects4DDataModule(**args)
    dm.setup("fit")
    return dm


def test_item_shapes_and_ranges(tiny_dataset: Path) -> None:
    dm = _dm(tiny_dataset)
    batch = next(iter(dm.train_dataloader()))
    assert batch["surface"].shape == (2, 4, 320, 7)
    assert batch["images"].shape == (2, 4, 3, 28, 28)
    assert batch["vol_points"].shape == (2, 4, 128, 3) and batch["vol_occ"].shape == (2, 4, 128)
    s = batch["surface"]
    assert s[..., :3].abs().max() <= 0.5 * POINT_SCALE + 1e-3  # scaled into the VAE's [-1, 1]
    assert s[..., :3].abs().max() > 0.5  # ... and really scaled (on disk it is <= 0.5)
    torch.testing.assert_close(s[..., 3:6].norm(dim=-1), torch.ones(s.shape[:-1]), atol=1e-4, rtol=0)
    assert (s[..., :256, 6] == 0).all() and (s[..., 256:, 6] == 1).all()  # random first, then sharp
    assert set(batch["vol_occ"].unique().tolist()) <= {0.0, 1.0}
    assert batch["images"].min() >= -1 - 1e-5 and batch["images"].max() <= 1 + 1e-5
    fi = batch["frame_index"]
    assert (fi[:, 1:] - fi[:, :-1] == 1).all()  # consecutive frames


def test_same_point_indices_and_camera_across_frames(tiny_dataset: Path) -> None:
    dm = _dm(tiny_dataset, stride=1)
    ds = dm.train_set
    item = ds.load_item(0, seed=11)
    rec = ds.records[0]
    # row i must be the same surface point in every frame: undo each frame's rotation and compare
    with np.load(rec.path / "geo_data/4d_sample_new.npz") as z:
        f0 = z[f"{rec.frames[int(item['frame_index'][0])]}/random_surface"].astype(np.float32)
    surf = item["surface"][..., :3].numpy() / POINT_SCALE  # [T, P, 3]
    rest = surf[0, :256]
    idx = [int(np.argmin(np.abs(f0[:, :3] - p).sum(1))) for p in rest[:20]]
    assert np.allclose(f0[idx, :3], rest[:20], atol=1e-3)
    # distances between point pairs are preserved by the rigid motion only if the rows correspond
    d0 = np.linalg.norm(surf[0, :50, None] - surf[0, None, :50], axis=-1)
    for t in range(1, surf.shape[0]):
        dt = np.linalg.norm(surf[t, :50, None] - surf[t, None, :50], axis=-1)
        assert np.abs(d0 - dt).max() < 5e-3
    # the same camera for all frames: each frame's image is that view's colour
    imgs = item["images"]  # [T, 3, S, S]
    centre = imgs[:, :, 14, 14]
    assert torch.allclose(centre, centre[:1].expand_as(centre), atol=0.05)
    assert isinstance(item["camera"], int)


def test_split_by_object_is_deterministic_and_disjoint(tiny_dataset: Path) -> None:
    names = [f"obj_{i:03d}" for i in range(40)]
    tr, va = split_by_object(names, val_fraction=0.1, seed=0)
    assert len(va) == 4 and not set(tr) & set(va) and sorted(tr + va) == names
    assert split_by_object(list(reversed(names)), val_fraction=0.1, seed=0) == (tr, va)
    assert split_by_object(names, val_fraction=0.1, seed=1)[1] != va
    dm = _dm(tiny_dataset)
    train_objs = {r.name for r in dm.train_set.records}
    val_objs = {r.name for r in dm.val_set.records}
    assert len(val_objs) == 1 and len(train_objs) == 4 and not train_objs & val_objs
    vb = next(iter(dm.val_dataloader()))
    assert set(vb["object"]) <= val_objs and "vol_occ" in vb


def test_stream_is_deterministic_and_worker_independent(tiny_dataset: Path) -> None:
    a = next(iter(_dm(tiny_dataset).train_dataloader()))
    b = next(iter(_dm(tiny_dataset, num_workers=2, persistent_workers=False).train_dataloader()))
    c = next(iter(_dm(tiny_dataset, seed=4).train_dataloader()))
    torch.testing.assert_close(a["surface"], b["surface"])
    torch.testing.assert_close(a["images"], b["images"])
    assert a["object"] == b["object"]
    assert not torch.equal(a["surface"], c["surface"])


def test_sampler_resume_and_ranks() -> None:
    full = list(SeededStreamSampler(7, seed=5, length=30))
    resumed = list(SeededStreamSampler(7, seed=5, length=30, start=12))
    assert resumed == full[12:] and len(SeededStreamSampler(7, seed=5, length=30, start=12)) == 30
    objs = [k[0] for k in full[:7]]
    assert sorted(objs) == list(range(7))  # each pass visits every object once
    r0 = list(SeededStreamSampler(7, seed=5, length=10, rank=0, world_size=2))
    r1 = list(SeededStreamSampler(7, seed=5, length=10, rank=1, world_size=2))
    g = list(SeededStreamSampler(7, seed=5, length=20))
    assert r0 == g[0::2] and r1 == g[1::2]


def _break(root: Path, how: str) -> Path:
    obj = root / "obj_001"
    if how == "corrupt":
        (obj / "geo_data/4d_sample_new.npz").write_bytes(b"not a zip file")
    elif how == "missing_frame":
        with np.load(obj / "geo_data/4d_sample_new.npz") as z:
            d = {k: z[k] for k in z.files if not k.startswith("frame_0002/")}
        np.savez(obj / "geo_data/4d_sample_new.npz", **d)
    elif how == "shape":
        with np.load(obj / "geo_data/4d_sample_new.npz") as z:
            d = {k: z[k] for k in z.files}
        d["frame_0003/random_surface"] = d["frame_0003/random_surface"][:, :3]
        np.savez(obj / "geo_data/4d_sample_new.npz", **d)
    elif how == "renders":
        shutil.rmtree(obj / "render_cond/frame_0001")
    return obj


@pytest.mark.parametrize("how", ["corrupt", "missing_frame", "shape", "renders"])
def test_bad_object_skipped_with_warning(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture, make_dataset
) -> None:
    root = make_dataset(
        tmp_path, num_objects=4, num_frames=5, num_points=300, num_sharp=60, num_volume=200, write_mesh=False
    )
    bad = _break(root, how)
    with caplog.at_level(logging.WARNING):
        dm = _dm(root, num_val_objects=0, val_fraction=0.0)
    assert str(bad) in caplog.text
    assert [r.name for r in dm.train_set.records] == ["obj_000", "obj_002", "obj_003"]
    assert dm.bad_objects and dm.bad_objects[0][0] == bad
    next(iter(dm.train_dataloader()))
    with pytest.raises(BadObjectError, match="obj_001"):
        _dm(root, num_val_objects=0, val_fraction=0.0, on_bad_object="raise")


def test_bad_object_at_load_time(tmp_path: Path, caplog: pytest.LogCaptureFixture, make_dataset) -> None:
    """An object that passes the scan but fails to load (corrupt image) is skipped when drawn."""
    root = make_dataset(
        tmp_path, num_objects=3, num_frames=4, num_points=300, num_sharp=60, num_volume=200, write_mesh=False
    )
    dm = _dm(root, num_val_objects=0, val_fraction=0.0, sequence_length=2)
    for png in (root / "obj_002/render_cond").rglob("*.png"):
        png.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        items = [dm.train_set[(2, s)] for s in range(3)]
    assert all(it["object"] != "obj_002" for it in items)
    assert "obj_002" in caplog.text
    dm_raise = _dm(root, num_val_objects=0, val_fraction=0.0, sequence_length=2, on_bad_object="raise")
    with pytest.raises(BadObjectError, match="obj_002"):
        dm_raise.train_set[(2, 0)]


def test_cache_gives_identical_items(tiny_dataset: Path) -> None:
    a = _dm(tiny_dataset).train_set.load_item(1, 9)
    dm = _dm(tiny_dataset, cache=True, cache_images=True)
    b = dm.train_set.load_item(1, 9)
    c = dm.train_set.load_item(1, 9)
    for k in ("surface", "images", "vol_points", "vol_occ"):
        torch.testing.assert_close(a[k], b[k])
        torch.testing.assert_close(b[k], c[k])
