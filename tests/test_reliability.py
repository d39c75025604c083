"""Bad input and faults (docs/reliability.md): one clear line, exit 2 before any expensive work, nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sculpt4d.errors import CheckpointError, InputError

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demos" / "box"
GLB = ROOT / "tests" / "assets" / "gltf"
ENV = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
NO_CKPT = "ckpt=/nonexistent/ckpt"  # a check that ran after model loading would report this path instead


def _cli(*args: str, cwd: Path = ROOT, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=timeout
    )


def _one_line_error(res: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    """Assert exit ``code`` and a single ``error:`` line (no traceback) holding every needle."""
    assert res.returncode == code, res.stdout[-2000:] + res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _predict(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return _cli("predict.py", f"paths.log_dir={tmp_path}/logs", f"hydra.run.dir={tmp_path}/hydra", *overrides)


def _tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` except Hydra's own run folder and logs."""
    files = (
        p
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.relative_to(path).parts[0] not in ("hydra", "logs")
    )
    return {str(p.relative_to(path)): p.read_bytes() for p in files}


# ------------------------------------------------------------------------------------- 1. output_dir
@pytest.mark.parametrize("kind", ["file", "user_folder", "input_itself", "inside_input", "holds_input"])
def test_predict_refuses_an_output_dir_that_would_cost_files(tmp_path: Path, kind: str) -> None:
    frames = tmp_path / "scene" / "frames"
    shutil.copytree(DEMO, frames)
    (tmp_path / "userdir" / "sub").mkdir(parents=True)
    (tmp_path / "userdir" / "precious.txt").write_text("keep me")
    (tmp_path / "userdir" / "sub" / "notes.md").write_text("mine")
    (tmp_path / "outfile").write_text("a file")
    out = {
        "file": tmp_path / "outfile",
        "user_folder": tmp_path / "userdir",
        "input_itself": frames,
        "inside_input": frames / "out",
        "holds_input": tmp_path / "scene",
    }[kind]
    before = _tree(tmp_path)
    res = _predict(tmp_path, f"input={frames}", f"output_dir={out}", NO_CKPT)
    _one_line_error(res, f"output_dir={out}")
    assert _tree(tmp_path) == before  # nothing written, renamed or deleted
    assert not [p for p in tmp_path.rglob(".*") if "hydra" not in p.parts]


@pytest.mark.parametrize(
    "override,needle",
    [
        ("mc_algo=foo", "mc_algo=foo"),
        ("num_chunks=0", "num_chunks=0"),
        ("seed=abc", "seed=abc must be an integer"),
        ("sequence_length=0", "sequence_length=0 must be >= 1"),
        ("sequence_length=-3", "sequence_length=-3 must be >= 1"),
        ("guidance_scale=-1", "guidance_scale=-1"),
        ("sequence_length=65", "max_frames=64"),
        ("output_dir=/proc/sculpt4d_out", "cannot write"),
        ("rgb_mode=foo", "rgb_mode=foo"),
        ("decode_dtype=fp16", "decode_dtype=fp16 must be auto, fp32 or bf16"),
        ("compile=fast", "compile=fast is not one of default, reduce-overhead"),
        ("attention_backend=sparse", "attention_backend=sparse is not one of auto"),
    ],
)
def test_predict_validates_every_key_before_loading_the_model(
    tmp_path: Path, override: str, needle: str
) -> None:
    res = _predict(tmp_path, f"output_dir={tmp_path}/out", NO_CKPT, override)
    _one_line_error(res, needle)
    assert not (tmp_path / "out").exists()


def test_predict_names_a_damaged_video_given_as_input(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    res = _predict(tmp_path, f"input={clip}", f"output_dir={tmp_path}/out", NO_CKPT)
    _one_line_error(res, "clip.mp4")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------- in-process predict (micro)
@pytest.fixture(scope="module")
def micro_ckpt(tmp_path_factory) -> Path:
    from omegaconf import OmegaConf
    from test_pipeline import ATTENTION, MICRO, _components

    from sculpt4d.hub import save_safetensors

    out = tmp_path_factory.mktemp("ckpt")
    save_safetensors(_components().state_dict(), out / "model.safetensors")
    (out / "config.yaml").write_text(OmegaConf.to_yaml({"model": MICRO, "attention": ATTENTION}))
    return out


def _run(tmp_path: Path, ckpt: Path, frames: Path, out: Path, *overrides: str) -> Path:
    from test_pipeline import _cfg, _run

    cfg = _cfg(
        tmp_path,
        f"ckpt={ckpt}",
        f"input={frames}",
        f"output_dir={out}",
        "sequence_length=3",
        "frame_stride=1",
        "num_steps=2",
        "octree_resolution=12",
        "progress=false",
        "export.video=false",
        "export.glb=false",
        *overrides,
    )
    return _run(cfg)


def test_rerun_replaces_an_earlier_prediction_and_keeps_user_files(tmp_path: Path, micro_ckpt: Path) -> None:
    out = tmp_path / "out"
    _run(tmp_path, micro_ckpt, DEMO, out)
    (out / "my_notes.txt").write_text("mine")
    (out / "frame_0000.obj").write_text("stale")
    _run(tmp_path, micro_ckpt, DEMO, out)
    assert (out / "my_notes.txt").read_text() == "mine"
    assert (out / "frame_0000.obj").read_text() != "stale"
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "precious.txt").write_text("keep")
    with pytest.raises(InputError, match="non-empty folder"):
        _run(tmp_path, micro_ckpt, DEMO, user)
    _run(tmp_path, micro_ckpt, DEMO, user, "overwrite=true")
    assert (user / "precious.txt").read_text() == "keep" and (user / "prediction.json").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_frames_in_natural_order_recorded_in_prediction_json(tmp_path: Path, micro_ckpt: Path) -> None:
    from sculpt4d.pipeline import image_files, list_frames

    plain = tmp_path / "plain"
    plain.mkdir()
    for t in range(12):
        shutil.copy(DEMO / f"frame_{t:04d}.png", plain / f"{t}.png")
    assert [p.name for p in list_frames(plain, 12)] == [f"{t}.png" for t in range(12)]
    assert image_files(plain)[1] == "natural" and image_files(DEMO)[1] == "lexicographic"
    out = _run(tmp_path, micro_ckpt, plain, tmp_path / "o1", "frame_stride=5")
    info = json.loads((out / "prediction.json").read_text())
    assert info["frame_order"] == "natural"
    assert [Path(f).name for f in info["frames"]] == ["0.png", "5.png", "10.png"]
    out = _run(tmp_path, micro_ckpt, DEMO, tmp_path / "o2")
    assert json.loads((out / "prediction.json").read_text())["frame_order"] == "lexicographic"


def test_image_errors_name_the_frame_and_rgb_mode_is_a_key(tmp_path: Path, micro_ckpt: Path) -> None:
    frames = tmp_path / "frames"
    shutil.copytree(DEMO, frames)
    size = Image.open(frames / "frame_0000.png").size
    Image.new("RGBA", size, (0, 0, 0, 0)).save(frames / "frame_0001.png")
    with pytest.raises(InputError, match=r"frame_0001\.png: .*(fully transparent|alpha channel is empty)"):
        _run(tmp_path, micro_ckpt, frames, tmp_path / "out")
    noise = tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(0)
    for t in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(noise / f"f{t}.jpg")
    with pytest.raises(
        InputError, match=r"f0\.jpg: the frame has no alpha.*remove_background=none rgb_mode=whole"
    ):
        _run(tmp_path, micro_ckpt, noise, tmp_path / "out")
    out = _run(tmp_path, micro_ckpt, noise, tmp_path / "out", "remove_background=none", "rgb_mode=whole")
    assert (out / "prediction.json").is_file()


# -------------------------------------------------------------------------------------- images
def test_high_bit_depth_grayscale_is_rescaled_not_clipped(tmp_path: Path) -> None:
    from sculpt4d.utils.images import load_image

    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    Image.fromarray(ramp.astype(np.float32) / 65535.0).save(tmp_path / "gf.tif")
    for name in ("g16.png", "gf.tif"):
        a = np.asarray(load_image(tmp_path / name))[..., 0]
        assert a[0, 0] == 0 and a[0, -1] == 255 and 100 < a[0, 32] < 160, name


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    from sculpt4d.utils.images import load_image

    img = Image.new("RGB", (256, 128), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    img.save(tmp_path / "phone.jpg", exif=exif)
    assert load_image(tmp_path / "phone.jpg").size == (128, 256)


# ------------------------------------------------------------------------------------- frame hints
def test_too_few_frames_hint_only_offers_settings_that_work(tmp_path: Path) -> None:
    from sculpt4d.pipeline import list_frames

    for t in range(10):
        (tmp_path / f"frame_{t:04d}.png").write_bytes(b"")
    for length, stride in [(8, 4), (4, 4), (6, 2), (11, 1), (3, 9)]:
        with pytest.raises(InputError) as err:
            list_frames(tmp_path, length, stride)
        msg = str(err.value)
        for key, value in [
            h.split("=") for h in msg.split("pass ")[1].split(" (")[0].rstrip(".").split(" or ")
        ]:
            kw = {"sequence_length": length, "stride": stride, **{key.replace("frame_", ""): int(value)}}
            assert list_frames(tmp_path, kw["sequence_length"], kw["stride"]), msg
        if length > 10:
            assert "no frame_stride fits" in msg


# ------------------------------------------------------------------------------- 9. stale temp folders
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temp_folders_of_killed_runs_are_removed(tmp_path: Path) -> None:
    from sculpt4d.utils.io import atomic_dir

    out = tmp_path / "out"
    out.mkdir()
    (out / "prediction.json").write_text("{}")
    dead = _dead_pid()
    stale = tmp_path / f".out.pid{dead}.abcd1234.tmp"
    stale.mkdir()
    (stale / "frame_0000.obj").write_text("partial")
    legacy = tmp_path / ".out.zz_9Ab12.tmp"  # the naming before the pid was added
    legacy.mkdir()
    os.utime(legacy, (time.time() - 7200, time.time() - 7200))
    swapped = tmp_path / f".out.pid{dead}.efgh5678.old.tmp"  # killed between the two renames
    swapped.mkdir()
    (swapped / "user.txt").write_text("mine")
    live = tmp_path / f".out.pid{os.getpid()}.live0000.tmp"
    live.mkdir()
    unrelated = tmp_path / ".out.notes"
    unrelated.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "prediction.json").write_text("{}")
    assert not stale.exists() and not legacy.exists() and not swapped.exists()
    assert (out / "user.txt").read_text() == "mine"  # a swapped-out earlier folder is merged back, not lost
    assert live.exists() and unrelated.exists()


def test_sigkill_during_export_leaves_nothing_after_the_next_run(tmp_path: Path, micro_ckpt: Path) -> None:
    out = tmp_path / "out"
    stale = tmp_path / f".out.pid{_dead_pid()}.k1ll3d00.tmp"
    stale.mkdir()
    (stale / "sequence.glb").write_bytes(b"partial")
    _run(tmp_path, micro_ckpt, DEMO, out)
    assert not stale.exists() and (out / "prediction.json").is_file()


# ------------------------------------------------------------------------------------ 5. training data
def _damage_deflate(path: Path) -> None:
    """Flip bytes at the start of the first member's deflate stream (the zip directory stays intact)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.infolist()[0]
    b = bytearray(path.read_bytes())
    n, m = struct.unpack("<HH", b[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + n + m
    for i in range(start, start + 64):
        b[i] ^= 0x5A
    path.write_bytes(bytes(b))


def test_damaged_deflate_stream_is_named_and_skipped(tmp_path: Path, make_dataset) -> None:
    from test_datamodule import _dm

    from sculpt4d.data.records import BadObjectError, scan_object

    root = make_dataset(
        tmp_path, num_objects=4, num_frames=5, num_points=300, num_sharp=60, num_volume=200, write_mesh=False
    )
    bad = root / "obj_001" / "geo_data" / "4d_sample_new.npz"
    _damage_deflate(bad)
    with pytest.raises(BadObjectError, match=r"4d_sample_new\.npz: corrupt npz \(error"):
        scan_object(root / "obj_001")
    dm = _dm(root, num_val_objects=0, val_fraction=0.0)
    assert [r.name for r in dm.train_set.records] == ["obj_000", "obj_002", "obj_003"]


# ----------------------------------------------------------------------------------------- 2. train
def _evil_checkpoint(path: Path, marker: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"x": Payload()}}, path)


def test_train_resume_never_runs_pickled_code(tmp_path: Path, tiny_dataset: Path) -> None:
    marker = tmp_path / "marker"
    _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    res = _cli(
        "train.py",
        "experiment=tiny",
        "debug=fdr",
        f"data.root={tiny_dataset}",
        f"output_folder={tmp_path}/out",
        f"hydra.run.dir={tmp_path}/hydra",
        f"ckpt_path={tmp_path / 'evil.ckpt'}",
    )
    line = _one_line_error(res, "evil.ckpt", "posix.system")
    assert "weights_only=False" not in line and "weights_only" not in res.stderr
    assert not marker.exists()


def test_real_checkpoint_still_resumes_with_weights_only(train_cfg, tmp_path: Path) -> None:
    from sculpt4d.lit.task import check_resume_checkpoint, train

    common = ["callbacks=plain", "training.steps=3", "training.ckpt_every=2", "trainer.limit_val_batches=0"]
    cfg = train_cfg("4d", *common, "trainer.max_steps=2", f"output_folder={tmp_path}/res")
    train(cfg)
    last = Path(cfg.checkpoint_dir) / "last.ckpt"
    check_resume_checkpoint(last)  # passes the allow-list
    cfg2 = train_cfg("4d", *common, f"ckpt_path={last}", f"output_folder={tmp_path}/res")
    _, objs = train(cfg2)
    assert objs["trainer"].global_step == 3


def test_train_user_errors_are_one_line(tmp_path: Path) -> None:
    res = _cli(
        "train.py",
        "experiment=tiny",
        "debug=fdr",
        f"data.root={tmp_path}/nope",
        f"output_folder={tmp_path}/out",
        f"hydra.run.dir={tmp_path}/hydra",
    )
    _one_line_error(res, "dataset root")


def test_refused_pickle_names_the_global_without_torchs_advice(tmp_path: Path) -> None:
    from sculpt4d.hub import load_state_dict

    marker = tmp_path / "marker"
    _evil_checkpoint(tmp_path / "pytorch_model.bin", marker)
    with pytest.raises(CheckpointError, match="posix.system") as err:
        load_state_dict(tmp_path / "pytorch_model.bin")
    assert "weights_only" not in str(err.value) and not marker.exists()


# ------------------------------------------------------------------------------------------ 4. prep
def _prep(tmp_path: Path, inp: Path, *overrides: str) -> subprocess.CompletedProcess:
    return _cli(
        "-m", "sculpt4d.prep", f"input={inp}", f"output_dir={tmp_path}/prep", f"hydra.run.dir={tmp_path}/hydra",
        "num_frames=4", "num_views=2", "resolution=64", "grid_res=32", "progress=false", "workers=1", *overrides,
    )  # fmt: skip


def test_prep_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zero.glb").write_bytes(b"")
    res = _prep(tmp_path, bad)
    _one_line_error(res, "1 of 1 objects failed", "allow_failures=true", code=1)
    assert json.loads((tmp_path / "prep" / "prep_failures.json").read_text())["num_failed"] == 1
    assert _prep(tmp_path, bad, "allow_failures=true").returncode == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.rmtree(tmp_path / "prep")
    _one_line_error(_prep(tmp_path, empty), "no .glb or .gltf file found")
    assert not (tmp_path / "prep").exists()


def test_static_asset_hint_names_a_real_key(tmp_path: Path) -> None:
    import trimesh

    from sculpt4d.prep.params import PrepParams
    from sculpt4d.prep.runner import process_object

    trimesh.creation.box().export(tmp_path / "static_box.glb")
    p = PrepParams.from_config(
        num_frames=2, num_views=1, resolution=32, grid_res=16, pc_random=64, pc_sharp=64, volume_size=64
    )
    res = process_object(tmp_path / "static_box.glb", tmp_path / "out", p, ("frames",))
    assert res["status"] == "failed" and "allow_static=true (prep config key)" in res["error"]
    p.allow_static = True
    assert process_object(tmp_path / "static_box.glb", tmp_path / "out", p, ("frames",))["status"] == "ok"


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _running(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_prep_leaves_no_worker_behind(tmp_path: Path, sig: int) -> None:
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a", "b"):
        shutil.copy(GLB / "CesiumMan.glb", two / f"{name}.glb")
    cmd = [sys.executable, "-m", "sculpt4d.prep", f"input={two}", f"output_dir={tmp_path}/prep",
           f"hydra.run.dir={tmp_path}/hydra", "num_frames=4", "num_views=2", "resolution=64", "grid_res=32",
           "progress=false", "workers=2"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    while len(_descendants(proc.pid)) < 3 and time.time() < deadline:  # manager + two workers
        time.sleep(0.2)
    time.sleep(1.0)
    kids = _descendants(proc.pid)
    assert len(kids) >= 3 and proc.poll() is None
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    time.sleep(2.0)
    assert not [k for k in kids if _running(k)]


# ------------------------------------------------------------------------------------- evaluate, ^C
def test_evaluate_refuses_a_folder_of_user_files(tmp_path: Path, tiny_dataset: Path) -> None:
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "precious.txt").write_text("keep")
    res = _cli(
        "-m", "sculpt4d.evaluate", f"benchmark={tiny_dataset}", f"output_dir={user}", NO_CKPT,
        f"paths.log_dir={tmp_path}/logs", f"hydra.run.dir={tmp_path}/hydra",
    )  # fmt: skip
    _one_line_error(res, "summary.json")
    assert [p.name for p in user.iterdir()] == ["precious.txt"]


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path: Path) -> None:
    cmd = [sys.executable, "predict.py", f"input={DEMO}", "sequence_length=3",
           "frame_stride=1", "num_steps=100000", "octree_resolution=12", f"output_dir={tmp_path}/out",
           f"paths.log_dir={tmp_path}/logs", f"hydra.run.dir={tmp_path}/hydra", "progress=false"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background parent may ignore ^C
    )  # fmt: skip
    log = tmp_path / "hydra" / "predict.log"
    deadline = time.time() + 60
    while time.time() < deadline and not log.is_file():  # the job (and its ^C handling) has started
        time.sleep(0.2)
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_a_swallowed_ctrl_c_still_stops_the_sampler() -> None:
    from sculpt4d.diffusion.sampler import EulerSampler
    from sculpt4d.utils import interrupt

    previous = signal.getsignal(signal.SIGINT)
    try:
        interrupt.install()
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        except BaseException:  # a library that catches everything, as scipy's numpy shim does on import
            pass
        steps: list[int] = []

        def model_fn(x, t, ctx):
            steps.append(1)
            return torch.zeros_like(x)

        with pytest.raises(KeyboardInterrupt):
            EulerSampler(num_steps=5).sample(
                model_fn, torch.zeros(1, 4, 2), torch.zeros(1, 1, 2), None, progress=False
            )
        assert steps == []  # stopped before the first step
        interrupt.install()  # a new job starts clean
        EulerSampler(num_steps=2).sample(
            model_fn, torch.zeros(1, 4, 2), torch.zeros(1, 1, 2), None, progress=False
        )
        assert len(steps) == 2
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_inside_a_finaliser_is_recorded_without_a_traceback() -> None:
    """Ctrl-C landing in ``__del__`` (frequent while a large library imports) cannot propagate: it is not
    reported as "Exception ignored ... Traceback", and the next check still stops the job; other finaliser
    errors still reach the previous hook."""
    from sculpt4d.utils import interrupt

    class Interrupted:
        def __del__(self):
            raise KeyboardInterrupt

    class Broken:
        def __del__(self):
            raise ValueError("a real finaliser bug")

    reported: list[BaseException] = []
    previous_signal, previous_hook = signal.getsignal(signal.SIGINT), sys.unraisablehook
    try:
        sys.unraisablehook = lambda info: reported.append(info.exc_value)
        interrupt.install()
        Interrupted()  # collected at once (CPython refcounting): the KeyboardInterrupt is unraisable
        assert reported == []
        with pytest.raises(KeyboardInterrupt):
            interrupt.raise_if_interrupted()
        Broken()
        assert [type(e) for e in reported] == [ValueError]
    finally:
        signal.signal(signal.SIGINT, previous_signal)
        sys.unraisablehook = previous_hook
