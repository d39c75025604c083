"""The Gradio page: upload frames / a zip / a video (or pick a demo), set the controls, Generate.

One generation runs at a time (the queue shows each waiting user their position); Cancel stops the
running job at its next sampling step or decoded frame; a failed job shows its one-sentence error and
the server keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

from omegaconf import DictConfig

from sculpt4d.app.jobs import Cancelled, Generator, Settings, attention_variants
from sculpt4d.errors import MissingDependencyError, Sculpt4DError
from sculpt4d.inputs.matting import MODES
from sculpt4d.pipeline import list_demos

log = logging.getLogger("sculpt4d.app")
STAGES = {"reading frames": "Reading frames", "sampling": "Sampling step", "decoding": "Decoding frame"}
NO_DEMO = "(upload)"


def check_upload(files: list[str] | None, max_files: int) -> list[str]:
    """The uploaded paths; too many files is a clear error before anything is read."""
    from sculpt4d.errors import InputError

    files = [str(f) for f in files or []]
    if len(files) > max_files:
        raise InputError(f"{len(files)} files uploaded: at most {max_files} frames per upload")
    return files


def build_ui(cfg: DictConfig, generator: Generator | None = None):
    """The ``gr.Blocks`` app for a composed ``conf/app.yaml``."""
    try:
        import gradio as gr
    except ImportError as e:
        raise MissingDependencyError(
            "gradio", "the web app", hint='pip install -e ".[app]" (or make install)'
        ) from e

    from sculpt4d.predict import with_checkpoint_defaults

    generator = generator or Generator(cfg)
    cfg = with_checkpoint_defaults(
        cfg, generator.pipeline().inference
    )  # the controls start at the checkpoint's values
    app = cfg.app
    data_dir = Path(str(cfg.paths.data_dir))
    output_root = Path(str(app.output_root))
    cancels: dict[str, threading.Event] = {}

    def generate(files, demo, steps, guidance, alpha, noise, shift, until, samples, seed, frames, stride, attention,
                 resolution, background, request: gr.Request, progress=gr.Progress()):  # fmt: skip
        session = getattr(request, "session_hash", None) or "local"
        cancel = cancels.setdefault(session, threading.Event())
        cancel.clear()
        try:
            if demo and demo != NO_DEMO:
                inputs: str | list[str] = str(data_dir / "demos" / demo)
            else:
                inputs = check_upload(files, int(app.limits.max_files))
                if not inputs:
                    raise gr.Error("Upload frames, a .zip or a video, or pick a demo.", print_exception=False)
                inputs = inputs[0] if len(inputs) == 1 else inputs
            settings = Settings(
                num_steps=int(steps), guidance_scale=float(guidance), noise_share_alpha=float(alpha),
                noise_scale=float(noise), sampling_shift=float(shift), guidance_until=float(until),
                num_samples=int(samples), seed=int(seed), sequence_length=int(frames), frame_stride=int(stride),
                attention=str(attention), octree_resolution=int(resolution), remove_background=str(background),
            )  # fmt: skip
            out_dir = output_root / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"

            def report(stage: str, done: int, total: int) -> None:
                progress((done, total), desc=f"{STAGES.get(stage, stage)} {done}/{total}")

            progress(0, desc="Loading the model")
            result = generator.run(inputs, settings, out_dir, report, cancel)
        except Cancelled:
            raise gr.Error("Generation cancelled.", print_exception=False) from None
        except Sculpt4DError as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:  # the server keeps serving; the user sees what failed
            log.exception("generation failed")
            raise gr.Error(f"Generation failed: {type(err).__name__}: {err}", print_exception=False) from None
        status = f"Done in {result.seconds:.1f} s: {len(list(result.folder.glob('frame_*.obj')))} meshes."
        files_out = [str(result.glb), str(result.objs_zip), str(result.prediction_json)]
        return str(result.glb), str(result.strip_mp4) if result.strip_mp4 else None, files_out, status

    def cancel_job(request: gr.Request):
        session = getattr(request, "session_hash", None) or "local"
        if session in cancels:
            cancels[session].set()
        return "Cancelling…"

    demos = [NO_DEMO, *list_demos(data_dir)]
    with gr.Blocks(title="sculpt4d") as ui:
        gr.Markdown(
            "# sculpt4d\nFrames, a .zip of frames or a video of an animated object in; an animated mesh out. "
            "Frames without alpha get their background removed."
        )
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(
                    label="Frames, a .zip or a video", file_count="multiple", elem_id="upload", height=260
                )
                demo = gr.Dropdown(demos, value=NO_DEMO, label="…or a bundled demo", elem_id="demo")
                with gr.Accordion("Settings", open=False):
                    steps = gr.Slider(2, 100, value=int(cfg.num_steps), step=1, label="Sampling steps")
                    guidance = gr.Slider(0, 15, value=float(cfg.guidance_scale), step=0.5, label="Guidance")
                    alpha = gr.Slider(0, 1, value=float(cfg.noise_share_alpha), step=0.05,
                                      label="Shared noise (noise_share_alpha)")  # fmt: skip
                    noise = gr.Slider(0, 1, value=float(cfg.noise_scale), step=0.05,
                                      label="Initial noise std (noise_scale)")  # fmt: skip
                    shift = gr.Slider(0.5, 5, value=float(cfg.sampling_shift), step=0.25,
                                      label="Steps at the noisy end (sampling_shift)")  # fmt: skip
                    until = gr.Slider(0, 1, value=float(cfg.guidance_until), step=0.05,
                                      label="Guidance until time (guidance_until)")  # fmt: skip
                    samples = gr.Slider(1, 8, value=int(cfg.num_samples), step=1,
                                        label="Samples averaged (num_samples; K x the time)")  # fmt: skip
                    seed = gr.Number(value=int(cfg.seed), precision=0, label="Seed")
                    frames = gr.Slider(2, int(app.max_sequence_length), value=int(cfg.sequence_length), step=1,
                                       label="Frames")  # fmt: skip
                    stride = gr.Slider(1, 16, value=int(cfg.frame_stride), step=1, label="Frame stride")
                    attention = gr.Dropdown(attention_variants(), value="trained", label="Attention")
                    resolution = gr.Slider(16, 256, value=int(cfg.octree_resolution), step=8,
                                           label="Mesh resolution")  # fmt: skip
                    background = gr.Dropdown(list(MODES), value=str(cfg.remove_background),
                                             label="Background removal")  # fmt: skip
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Cancel", elem_id="cancel")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=2):
                viewer = gr.Model3D(label="Animated mesh (sequence.glb)", elem_id="viewer", height=420)
                strip = gr.Video(label="Input beside mesh", elem_id="strip", autoplay=True, loop=True)
                downloads = gr.File(label="sequence.glb, meshes.zip (OBJ per frame), prediction.json",
                                    elem_id="downloads")  # fmt: skip
        sampling = [steps, guidance, alpha, noise, shift, until, samples, seed]
        controls = [*sampling, frames, stride, attention, resolution, background]
        event = run.click(
            generate,
            [files, demo, *controls],
            [viewer, strip, downloads, status],
            concurrency_limit=1,
            concurrency_id="generate",
        )
        stop.click(cancel_job, None, status, cancels=[event], queue=False)
    ui.queue(max_size=int(app.queue_size), default_concurrency_limit=1)
    return ui


def serve(cfg: DictConfig) -> None:
    """Load the model, then serve the page on ``app.host:app.port`` until interrupted."""
    generator = Generator(cfg)
    generator.pipeline()  # load before the first request
    ui = build_ui(cfg, generator)
    print(f"[sculpt4d] app on http://{cfg.app.host}:{cfg.app.port}", flush=True)
    ui.launch(
        server_name=str(cfg.app.host),
        server_port=int(cfg.app.port),
        max_file_size=f"{int(cfg.app.max_upload_mb)}mb",
        allowed_paths=[str(Path(str(cfg.app.output_root)).resolve())],
        show_error=True,
        quiet=True,
    )
