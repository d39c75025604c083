"""sculpt4d.inputs: videos, zips, file lists and RGB frames give the frames a folder gives; bad input fails clearly."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sculpt4d.errors import InputError
from sculpt4d.inputs import Limits, load_frames
from sculpt4d.inputs.matting import plain_matte

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demos" / "box"
T = 3


def on_white(path: Path) -> np.ndarray:
    """An RGBA demo frame composited on white: ``[H, W, 3]`` uint8."""
    a = np.asarray(Image.open(path).convert("RGBA")).astype(np.float32)
    m = a[..., 3:] / 255.0
    return (a[..., :3] * m + 255.0 * (1 - m)).round().astype(np.uint8)


def write_mp4(path: Path, frames: list[np.ndarray], fps: float = 8.0) -> Path:
    from sculpt4d.export import write_video

    write_video(frames, None, path, fps=fps)
    return path


@pytest.fixture(scope="module")
def demo_mp4(tmp_path_factory) -> Path:
    frames = [on_white(p) for p in sorted(DEMO.glob("*.png"))[:12]]
    return write_mp4(tmp_path_factory.mktemp("video") / "box.mp4", frames)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_folder_keeps_alpha_and_takes_every_kth_frame():
    frames = load_frames(DEMO, 3, 4)
    assert [Path(n).name for n in frames.names] == ["frame_0000.png", "frame_0004.png", "frame_0008.png"]
    assert frames.methods == ["alpha"] * 3
    ref = np.asarray(Image.open(DEMO / "frame_0004.png"))
    assert np.array_equal(np.asarray(frames.images[1]), ref)


def test_rgb_on_white_is_matted_like_the_original_alpha(tmp_path):
    for p in sorted(DEMO.glob("*.png"))[:T]:
        Image.fromarray(on_white(p)).save(tmp_path / p.name.replace(".png", ".jpg"), quality=95)
    frames = load_frames(tmp_path, T, 1)
    assert frames.methods == ["plain"] * T
    for img, p in zip(frames.images, sorted(DEMO.glob("*.png"))):
        truth = np.asarray(Image.open(p))[..., 3] > 127
        assert iou(np.asarray(img)[..., 3] > 127, truth) > 0.9


def test_plain_matte_keeps_the_largest_component():
    rgb = np.full((64, 64, 3), 255, np.uint8)
    rgb[10:40, 10:40] = (200, 30, 30)
    rgb[50:54, 50:54] = (0, 0, 0)  # a speck
    alpha = plain_matte(rgb)
    assert alpha[20, 20] == 255 and alpha[52, 52] == 0


def test_video_gives_the_folder_frames(demo_mp4):
    frames = load_frames(demo_mp4, T, 4)
    assert frames.names == ["box.mp4#0.000s", "box.mp4#0.500s", "box.mp4#1.000s"]
    assert frames.methods == ["plain"] * T
    for img, t in zip(frames.images, (0, 4, 8)):
        truth = np.asarray(Image.open(DEMO / f"frame_{t:04d}.png"))[..., 3] > 127
        assert iou(np.asarray(img)[..., 3] > 127, truth) > 0.85


def test_video_fps_start_end_and_short_clips(demo_mp4):
    assert load_frames(demo_mp4, T, 1, video_fps=2.0).names == [
        "box.mp4#0.000s",
        "box.mp4#0.500s",
        "box.mp4#1.000s",
    ]
    assert load_frames(demo_mp4, T, 1, start=0.5).names[0] == "box.mp4#0.500s"
    spread = load_frames(demo_mp4, T, 8).names  # 12 frames < 17 needed: spread over the clip
    assert spread == ["box.mp4#0.000s", "box.mp4#0.750s", "box.mp4#1.375s"]
    with pytest.raises(InputError, match="box.mp4.*video_fps"):
        load_frames(demo_mp4, T, 1, video_fps=0.5)


def test_gif_keeps_transparency(tmp_path):
    imgs = [Image.open(p).convert("RGBA") for p in sorted(DEMO.glob("*.png"))[:T]]
    imgs[0].save(tmp_path / "clip.gif", save_all=True, append_images=imgs[1:], duration=125, disposal=2)
    frames = load_frames(tmp_path / "clip.gif", T, 1)
    assert frames.methods == ["alpha"] * T


def test_zip_and_file_list_match_the_folder(tmp_path):
    files = sorted(DEMO.glob("*.png"))[:10]
    with zipfile.ZipFile(tmp_path / "frames.zip", "w") as zf:
        for p in reversed(files):
            zf.write(p, f"clip/{p.name}")
    ref = load_frames(DEMO, T, 2)
    for spec in (tmp_path / "frames.zip", list(reversed(files))):
        got = load_frames(spec, T, 2)
        assert [Path(n).name for n in got.names] == [Path(n).name for n in ref.names]
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(got.images, ref.images))


def _bad(tmp_path: Path, kind: str) -> Path:
    frames = sorted(DEMO.glob("*.png"))[:T]
    if kind == "text":
        (tmp_path / "notes.txt").write_text("hello")
        return tmp_path / "notes.txt"
    if kind == "empty_zip":
        with zipfile.ZipFile(tmp_path / "empty.zip", "w") as zf:
            zf.writestr("readme.txt", "no frames")
        return tmp_path / "empty.zip"
    if kind == "single":
        return frames[0]
    if kind == "corrupt_video":
        (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
        return tmp_path / "broken.mp4"
    if kind == "transparent":
        d = tmp_path / "transparent"
        d.mkdir()
        for i, p in enumerate(frames):
            img = Image.open(p)
            if i == 1:
                img = Image.new("RGBA", img.size, (0, 0, 0, 0))
            img.save(d / p.name)
        return d
    if kind == "mixed":
        d = tmp_path / "mixed"
        d.mkdir()
        for i, p in enumerate(frames):
            img = Image.open(p)
            (img.resize((128, 128)) if i == 2 else img).save(d / p.name)
        return d
    raise ValueError(kind)


BAD = [
    ("text", r"notes.txt: not a supported input"),
    ("empty_zip", r"empty.zip: the zip holds no images"),
    ("single", r"frame_0000.png: a single frame"),
    ("corrupt_video", r"broken.mp4: cannot decode the video"),
    ("transparent", r"frame_0001.png: the frame is fully transparent"),
    ("mixed", r"frame_0002.png is 128×128 but frame_0000.png is 256×256"),
]


@pytest.mark.parametrize("kind,message", BAD)
def test_bad_input_is_one_sentence_naming_the_file(tmp_path, kind, message):
    with pytest.raises(InputError, match=message) as err:
        load_frames(_bad(tmp_path, kind), T, 1)
    assert "\n" not in str(err.value)


def test_huge_video_is_refused_before_decoding(tmp_path):
    long = write_mp4(
        tmp_path / "long.mp4", [np.full((32, 32, 3), i % 255, np.uint8) for i in range(240)], fps=2
    )
    limits = Limits(max_video_seconds=60)
    with pytest.raises(
        InputError, match=r"long.mp4: the frames used span 119 s of video, over the 60 s limit"
    ):
        load_frames(long, T, 1, video_fps=1 / 59.5, limits=limits)
    with pytest.raises(InputError, match=r"long.mp4: 32×32 video frames are over the 100-pixel limit"):
        load_frames(long, T, 1, limits=Limits(max_pixels=100))


def test_rembg_without_its_model_names_the_file(tmp_path, monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "rembg", types.ModuleType("rembg"))  # installed or not: never downloads
    monkeypatch.setenv("U2NET_HOME", str(tmp_path))
    with pytest.raises(
        InputError,
        match=f"frame_0000.png: remove_background=rembg needs the model file {tmp_path}/u2net.onnx",
    ):
        load_frames(_rgb_folder(tmp_path), T, 1, remove_background="rembg")


def _rgb_folder(tmp_path: Path) -> Path:
    d = tmp_path / "rgb"
    d.mkdir()
    for p in sorted(DEMO.glob("*.png"))[:T]:
        Image.fromarray(on_white(p)).save(d / p.name)
    return d


def test_none_keeps_the_whole_rgb_frame(tmp_path):
    frames = load_frames(_rgb_folder(tmp_path), T, 1, remove_background="none")
    assert frames.methods == ["none"] * T and np.asarray(frames.images[0])[..., 3].min() == 255


def test_predict_reads_a_video_and_saves_what_the_model_saw(micro_checkpoint, demo_mp4, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "predict.py", f"ckpt={micro_checkpoint}", f"input={demo_mp4}", f"output_dir={out}",
         f"sequence_length={T}", "num_steps=2", "octree_resolution=16", "progress=false", "export.video=false",
         f"paths.log_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    saved = sorted((out / "inputs").glob("frame_*.png"))
    assert len(saved) == T and Image.open(saved[0]).mode == "RGBA"
    assert len(list(out.glob("frame_*.obj"))) == T

    bad = subprocess.run(
        [sys.executable, "predict.py", f"ckpt={micro_checkpoint}", f"input={_bad(tmp_path, 'empty_zip')}",
         f"output_dir={tmp_path / 'bad'}", f"paths.log_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()] and "empty.zip" in bad.stderr
    assert not (tmp_path / "bad").exists()
