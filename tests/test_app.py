"""The web app: the job code (no browser) and, in a real Chromium driven by Playwright, upload -> Generate ->
animated GLB, and a bad upload -> its error message in the page.

Set ``SCULPT4D_APP_CKPT`` / ``SCULPT4D_APP_ARGS`` to run the browser test on another model (the README
screenshot: the shipped tiny model) and ``SCULPT4D_SCREENSHOT=docs/images/app.png`` to keep the screenshot.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from sculpt4d.app.jobs import Cancelled, Generator, Settings
from sculpt4d.config import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demos" / "box"
CHROMIUM = os.environ.get("SCULPT4D_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--enable-unsafe-swiftshader",
]  # fmt: skip
FAST = ["sequence_length=3", "frame_stride=1", "num_steps=2", "octree_resolution=16"]


def _app_cfg(tmp_path: Path, *overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("app", overrides=[f"paths.root_dir={ROOT}", f"paths.log_dir={tmp_path}", *overrides])


def test_generator_runs_the_predict_code_and_cancels(micro_checkpoint, tmp_path):
    gen = Generator(_app_cfg(tmp_path, f"ckpt={micro_checkpoint}", *FAST))
    settings = Settings(num_steps=2, sequence_length=3, frame_stride=2, octree_resolution=16)
    stages: list[tuple[str, int, int]] = []
    res = gen.run(str(DEMO), settings, tmp_path / "job", lambda *s: stages.append(s))
    assert {p.name for p in res.folder.iterdir()} >= {
        "sequence.glb",
        "meshes.zip",
        "prediction.json",
        "inputs",
    }
    assert ("sampling", 2, 2) in stages and ("decoding", 3, 3) in stages
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        gen.run(str(DEMO), settings, tmp_path / "cancelled", cancel=cancel)
    assert not (tmp_path / "cancelled").exists()


def test_app_controls_become_the_requests_predict_keys(micro_checkpoint, tmp_path):
    gen = Generator(_app_cfg(tmp_path, f"ckpt={micro_checkpoint}", *FAST))
    settings = Settings(
        num_steps=3,
        noise_share_alpha=0.25,
        noise_scale=0.8,
        sampling_shift=2.0,
        guidance_until=0.6,
        num_samples=2,
        seed=7,
        sequence_length=3,
    )
    cfg = gen.job_config(str(DEMO), settings, tmp_path / "job")
    picked = (
        "num_steps",
        "noise_share_alpha",
        "noise_scale",
        "sampling_shift",
        "guidance_until",
        "num_samples",
        "seed",
        "sequence_length",
    )
    assert {k: cfg[k] for k in picked} == {k: getattr(settings, k) for k in picked}
    assert Generator(_app_cfg(tmp_path)).job_config(str(DEMO), Settings(), tmp_path / "j").noise_scale is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser_or_skip():
    pytest.importorskip("gradio", reason="gradio is not installed (make install)")
    pw = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make install)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: run `make install-browser` (apt-get install chromium)")
    return pw


@pytest.fixture(scope="module")
def server(micro_checkpoint, tmp_path_factory):
    """``python app.py`` on a free localhost port; yields (url, sequence_length)."""
    _browser_or_skip()
    tmp = tmp_path_factory.mktemp("app")
    port = _free_port()
    ckpt = os.environ.get("SCULPT4D_APP_CKPT", str(micro_checkpoint))
    extra = shlex.split(os.environ.get("SCULPT4D_APP_ARGS", " ".join(FAST)))
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "app.py", f"ckpt={ckpt}", f"app.port={port}", f"paths.log_dir={tmp}", *extra],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"the app did not start:\n{(tmp / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
    seq = next((int(a.split("=")[1]) for a in extra if a.startswith("sequence_length=")), 8)
    yield url, seq
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def page(server):
    pw = _browser_or_skip()
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()


def _open(page, url: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#generate").wait_for()


def test_bad_upload_shows_its_error_in_the_page(server, page, tmp_path):
    url, _ = server
    (tmp_path / "notes.txt").write_text("not a video")
    _open(page, url)
    page.locator("#upload input[type=file]").set_input_files([str(tmp_path / "notes.txt")])
    page.locator('#upload td[aria-label="notes.txt"]').wait_for(state="attached")
    page.locator("#generate").click()
    page.get_by_text("notes.txt: not a supported input").first.wait_for(timeout=60_000)


def _wait_for_a_drawn_canvas(canvas, page, timeout_s: float = 30.0) -> None:
    """Until the canvas shows more than one colour (the viewer has drawn the mesh), at most ``timeout_s``."""
    import io

    import numpy as np
    from PIL import Image

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if np.asarray(Image.open(io.BytesIO(canvas.screenshot()))).std() > 0:
            return
        page.wait_for_timeout(250)


@pytest.mark.timeout(1800)
def test_upload_generate_view_and_download_the_animated_glb(server, page, tmp_path):
    import pygltflib
    import trimesh

    url, seq = server
    _open(page, url)
    frames = sorted(DEMO.glob("*.png"))
    page.locator("#upload input[type=file]").set_input_files([str(f) for f in frames])
    page.locator(f'#upload td[aria-label="{frames[-1].name}"]').wait_for(state="attached")
    page.locator("#generate").click()
    link = page.locator('#downloads a[download="sequence.glb"]').first
    link.wait_for(timeout=900_000)
    canvas = page.locator("#viewer canvas").first
    canvas.wait_for()
    # WebGL may take seconds to draw the first frame on a loaded machine
    _wait_for_a_drawn_canvas(canvas, page)
    shots = []
    for _ in range(4):  # the viewer plays the animation: the canvas changes over time
        shots.append(canvas.screenshot())
        page.wait_for_timeout(300)
    page.screenshot(path=os.environ.get("SCULPT4D_SCREENSHOT", str(tmp_path / "app.png")), full_page=True)
    assert len(set(shots)) > 1, "the 3D viewer shows a still image: the animation does not play"

    glb = tmp_path / "sequence.glb"
    glb.write_bytes(page.request.get(link.get_attribute("href")).body())
    scene = trimesh.load(glb)
    assert len(scene.geometry) >= 1
    gltf = pygltflib.GLTF2().load(str(glb))
    assert len(gltf.animations) == 1
    times = gltf.accessors[gltf.animations[0].samplers[0].input]
    assert times.count in (seq, seq + 1)  # morph: one key per frame; visibility: + the hold of the last frame


def test_too_many_uploaded_files_is_one_clear_sentence():
    from sculpt4d.app.ui import check_upload
    from sculpt4d.errors import InputError

    assert check_upload(["a.png", "b.png"], 2) == ["a.png", "b.png"]
    with pytest.raises(InputError, match="3 files uploaded: at most 2 frames per upload"):
        check_upload(["a.png", "b.png", "c.png"], 2)
