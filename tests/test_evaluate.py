"""Evaluation plumbing: the benchmark folder a fresh clone gets, per-method peak memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from sculpt4d.errors import InputError
from sculpt4d.evaluate import find_objects, load_object, resolve_benchmark
from sculpt4d.utils.memory import peak_memory_mb, reset_peak_memory

ROOT = Path(__file__).resolve().parents[1]


def _cfg(tmp_path: Path, benchmark: str, prepare: bool = True):
    return OmegaConf.create(
        {
            "benchmark": benchmark,
            "prepare_missing": prepare,
            "paths": {"root_dir": str(ROOT), "data_dir": str(tmp_path / "data")},
        }
    )


def test_missing_unknown_benchmark_says_what_to_do(tmp_path):
    with pytest.raises(InputError, match=r"benchmark folder 'mine/bench' not found.*benchmark=<folder"):
        resolve_benchmark(_cfg(tmp_path, "mine/bench"))
    with pytest.raises(InputError, match="make data-tiny"):
        resolve_benchmark(_cfg(tmp_path, "tiny/benchmark", prepare=False))


def test_existing_benchmark_is_used_as_given(tmp_path, tiny_dataset):
    assert resolve_benchmark(_cfg(tmp_path, str(tiny_dataset))) == tiny_dataset


def test_missing_default_benchmark_is_prepared_on_first_use(tmp_path, monkeypatch):
    # the held-out split of `make data-tiny`, cut to one door sequence for speed
    import sculpt4d.prep.tiny as tiny

    monkeypatch.setattr(tiny, "BENCH_PER_CATEGORY", 1)
    monkeypatch.setattr(tiny, "CATEGORIES", ("door",))
    root = resolve_benchmark(_cfg(tmp_path, "tiny/benchmark"))
    assert root == tmp_path / "data" / "tiny" / "benchmark"
    (obj,) = find_objects(root)
    assert obj.name == "door_100000"  # held-out seeds start at 100000: never a training object
    assert len(list((obj / "render_cond").glob("frame_*"))) == tiny.TINY["num_frames"]
    assert json.loads((root / "prep_failures.json").read_text())["num_failed"] == 0
    frames, gts = load_object(obj, sequence_length=8, cond_view=0, stride=2)
    assert len(frames) == 8 and all(f.is_file() for f in frames)
    assert all(g.is_watertight for g in gts)
    lo = np.min([g.bounds[0] for g in gts], axis=0)
    hi = np.max([g.bounds[1] for g in gts], axis=0)
    assert np.all(lo >= -1.0) and np.all(hi <= 1.0) and (hi - lo).max() > 1.5  # the VAE's [-1, 1] frame
    assert resolve_benchmark(_cfg(tmp_path, "tiny/benchmark")) == root  # second call: found, not re-made


def test_cpu_peak_memory_is_per_stage():
    cpu = torch.device("cpu")
    if not reset_peak_memory(cpu):
        pytest.skip("no /proc/self/clear_refs: the CPU peak is the process's")
    big = np.ones(40_000_000)  # 305 MiB, touched
    first = peak_memory_mb(cpu)
    del big
    reset_peak_memory(cpu)
    second = peak_memory_mb(cpu)
    assert first - second > 250
