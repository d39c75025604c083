"""Running the prep stages over many objects: discovery, shards, resume markers and a process pool.

Each stage records a ``.done/<stage>`` marker last, holding the parameters it ran with; a rerun skips stages
whose marker matches, so an interrupted run resumes where it stopped. Objects run in a process pool (one
object per task, a crashed worker's objects retried); a failing object is reported, never fatal.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from sculpt4d.errors import InputError
from sculpt4d.prep.params import PrepParams
from sculpt4d.prep.report import write_failure_report
from sculpt4d.prep.stages import Progress, stage_frames, stage_render, stage_sample
from sculpt4d.utils.io import write_json

STAGES = ("frames", "render", "sample", "verify")
DOWNSTREAM = {
    "frames": ("render", "sample", "verify"),
    "render": ("verify",),
    "sample": ("verify",),
    "verify": (),
}
GLB_SUFFIXES = (".glb", ".gltf")


def discover(inp: str | Path) -> list[Path]:
    """A GLB/glTF file, or every one below a folder, sorted by path."""
    inp = Path(inp)
    if inp.is_file():
        return [inp]
    if inp.is_dir():
        return sorted(q for q in inp.rglob("*") if q.suffix.lower() in GLB_SUFFIXES and q.is_file())
    raise InputError(f"input {inp} does not exist; pass a .glb file or a folder of them")


def parse_shard(spec: str | None) -> tuple[int, int]:
    if spec in (None, "", "null"):
        return 0, 1
    try:
        i, n = (int(x) for x in str(spec).split("/"))
    except ValueError:
        raise InputError(f"shard must look like 'i/n' (e.g. 0/4), got {spec!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"shard {spec!r}: need 0 <= i < n")
    return i, n


def shard_items(items: list[Path], spec: str | None) -> list[Path]:
    """Deterministic split of the sorted list: shard i of n takes items i, i+n, i+2n, ..."""
    i, n = parse_shard(spec)
    return sorted(items)[i::n]


def clean_partial(obj_dir: Path) -> int:
    """Remove temporary files/folders left by an interrupted run (atomic writes' ``.name.*tmp*``)."""
    n = 0
    if not obj_dir.exists():
        return 0
    import shutil

    for q in sorted(obj_dir.rglob(".*"), key=lambda x: -len(x.parts)):
        if ".tmp" in q.name or q.name.endswith(".old"):
            shutil.rmtree(q, ignore_errors=True) if q.is_dir() else q.unlink(missing_ok=True)
            n += 1
    return n


def _marker(obj_dir: Path, stage: str) -> Path:
    return obj_dir / ".done" / stage


def is_done(obj_dir: Path, stage: str, params: dict) -> bool:
    m = _marker(obj_dir, stage)
    if not m.exists():
        return False
    try:
        return json.loads(m.read_text()).get("params") == params
    except (OSError, json.JSONDecodeError):
        return False


def _stage_params(p: PrepParams, stage: str) -> dict:
    return {} if stage == "verify" else p.for_stage(stage)


def process_object(
    src: Path,
    out_root: Path,
    p: PrepParams,
    stages: tuple[str, ...] = STAGES,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Run the selected stages for one asset; never raises (errors are returned in the result)."""
    import shutil
    import time
    import traceback

    name = Path(src).stem
    obj_dir = Path(out_root) / name
    res: dict = dict(name=name, source=str(src), status="ok", ran=[], skipped=[], seconds={})
    stage = None
    try:
        clean_partial(obj_dir)
        for stage in STAGES:
            if stage not in stages:
                continue
            params = _stage_params(p, stage)
            if not overwrite and is_done(obj_dir, stage, params):
                res["skipped"].append(stage)
                continue
            t0 = time.perf_counter()
            for d in (stage, *DOWNSTREAM[stage]):
                _marker(obj_dir, d).unlink(missing_ok=True)
            if stage == "frames":
                shutil.rmtree(obj_dir / "render_cond", ignore_errors=True)
                stage_frames(Path(src), obj_dir, p, progress)
            elif stage == "render":
                for png in (obj_dir / "render_cond").glob("frame_*/*.png"):
                    png.unlink()
                res.update(stage_render(obj_dir, p, progress))
            elif stage == "sample":
                res.update(stage_sample(obj_dir, p, progress))
            else:
                from sculpt4d.prep.verify import verify_object

                rep = verify_object(obj_dir, obj_dir / "verify")
                res["verify_ok"] = rep["ok"]
            write_json(_marker(obj_dir, stage), dict(params=params, seconds=time.perf_counter() - t0))
            res["ran"].append(stage)
            res["seconds"][stage] = round(time.perf_counter() - t0, 3)
    except Exception as e:  # one bad asset must not kill the run
        res.update(status="failed", stage=stage, error=f"{type(e).__name__}: {e}",
                   traceback=traceback.format_exc(limit=6))  # fmt: skip
    return res


# ---- process pool with a shared progress queue
_QUEUE = None
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere); exit if it already has."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _init_worker(q, parent_pid: int | None = None) -> None:
    global _QUEUE
    if parent_pid is not None:
        die_with_parent(parent_pid)
    _QUEUE = q


def _terminate_children(signum: int, frame) -> None:
    """SIGTERM in the parent: stop every worker (and the queue manager), then exit ``128 + signum``."""
    import multiprocessing as mp
    import sys

    children = mp.active_children()
    for c in children:
        c.terminate()
    for c in children:
        c.join(timeout=5)
    print(f"prep: terminated by signal {signum}; rerun the same command to resume", file=sys.stderr)
    os._exit(128 + signum)


@contextlib.contextmanager
def _workers_die_on_sigterm() -> Iterator[None]:
    """Install :func:`_terminate_children` for SIGTERM while a pool runs (main thread only)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate_children)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _worker(src: str, out_root: str, p: PrepParams, stages: tuple[str, ...], overwrite: bool) -> dict:
    name = Path(src).stem

    def cb(stage: str, done: int, total: int) -> None:
        if _QUEUE is not None:
            _QUEUE.put((name, stage, done, total))

    return process_object(Path(src), Path(out_root), p, stages, overwrite, cb)


def run(
    inputs: list[Path],
    out_root: str | Path,
    p: PrepParams,
    stages: tuple[str, ...] = STAGES,
    workers: int = 1,
    overwrite: bool = False,
    show_progress: bool = True,
    max_rounds: int = 3,
) -> list[dict]:
    """Prepare every asset in ``inputs`` under ``out_root``; writes ``prep_failures.json``; returns results."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise InputError(f"unknown stages {sorted(unknown)}; choose from {list(STAGES)}")
    results: dict[str, dict] = {}
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*cols, disable=not show_progress, transient=False, refresh_per_second=4) as bar:
        overall = bar.add_task("objects", total=len(inputs))
        tasks: dict[str, int] = {}

        def on_progress(name: str, stage: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(f"  {name}", total=total)
            bar.update(tasks[name], completed=done, total=total, description=f"  {name} [{stage}]")

        def finish(res: dict) -> None:
            results[res["name"]] = res
            if res["name"] in tasks:
                bar.remove_task(tasks.pop(res["name"]))
            bar.advance(overall)

        if workers <= 1 or len(inputs) <= 1:
            for src in inputs:
                finish(
                    process_object(
                        src,
                        out_root,
                        p,
                        stages,
                        overwrite,
                        lambda s, d, t, n=src.stem: on_progress(n, s, d, t),
                    )
                )
        else:
            from multiprocessing.managers import SyncManager

            ctx = mp.get_context("spawn")
            pending = [str(s) for s in inputs]
            for rnd in range(max_rounds):
                if not pending:
                    break
                mgr = SyncManager(ctx=ctx)
                mgr.start(die_with_parent, (os.getpid(),))
                with mgr, _workers_die_on_sigterm():
                    q = mgr.Queue()
                    broken: list[str] = []
                    with ProcessPoolExecutor(min(workers, len(pending)), mp_context=ctx, initializer=_init_worker,
                                             initargs=(q, os.getpid())) as ex:  # fmt: skip
                        futs = {
                            ex.submit(_worker, s, str(out_root), p, tuple(stages), overwrite): s
                            for s in pending
                        }
                        remaining = set(futs)
                        while remaining:
                            done = [f for f in remaining if f.done()]
                            while not q.empty():
                                on_progress(*q.get())
                            for f in done:
                                remaining.discard(f)
                                try:
                                    finish(f.result())
                                except BrokenProcessPool:
                                    broken.append(futs[f])
                            if remaining and not done:
                                wait(remaining, timeout=0.25, return_when=FIRST_COMPLETED)
                pending = broken
                if pending and rnd == max_rounds - 1:
                    for s in pending:
                        finish(dict(name=Path(s).stem, source=s, status="failed", stage=None,
                                    error="worker process died (crash or out of memory)", ran=[], skipped=[]))  # fmt: skip
    ordered = [results[Path(s).stem] for s in inputs if Path(s).stem in results]
    write_failure_report(out_root, ordered)
    return ordered
