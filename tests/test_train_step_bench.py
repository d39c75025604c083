"""``benchmarks/train_step.py`` times the tiny recipe's real training step on a dataset, with its real loader and
with batches drawn beforehand, and writes the rows as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_step_benchmark_times_real_and_preloaded_fits(make_dataset, tmp_path):
    data = make_dataset(tmp_path / "data", num_objects=3)
    out = tmp_path / "step.json"
    cmd = [sys.executable, "benchmarks/train_step.py", "--data", str(data), "--stages", "dit3d",
           "--steps", "4", "--warmup", "1", "--override", "training.batch_size=2", "data.num_workers=0",
           "--json", str(out)]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["stage"] == "dit3d" and row["batch"] == 2 and row["steps"] == 4
    assert row["loader_s"] > 0 and row["fit_s"] > 0 and row["fit_preloaded_s"] > 0
    assert row["loader_share"] == 1 - row["fit_preloaded_s"] / row["fit_s"]
    assert "dit3d" in res.stdout and "loader_share" in res.stdout


def test_train_step_benchmark_names_a_missing_data_folder(tmp_path):
    res = subprocess.run(
        [sys.executable, "benchmarks/train_step.py", "--data", str(tmp_path / "nope")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode != 0 and "nope: no such data folder" in res.stderr


def test_train_step_benchmark_times_the_cached_stage_beside_the_plain_one(make_dataset, tmp_path):
    data = make_dataset(tmp_path / "data", num_objects=3)
    out = tmp_path / "step.json"
    cache_dir = tmp_path / "cache"
    cmd = [sys.executable, "benchmarks/train_step.py", "--data", str(data), "--stages", "dit3d", "dit3d+cache",
           "--steps", "4", "--warmup", "1", "--override", "training.batch_size=2", "data.num_workers=0",
           "--cache-dir", str(cache_dir), "--json", str(out)]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    plain, cached = json.loads(out.read_text())["rows"]
    assert plain["stage"] == "dit3d" and "cache_build_s" not in plain
    assert cached["stage"] == "dit3d+cache" and cached["cache_build_s"] > 0
    assert cached["speedup"] == plain["fit_s"] / cached["fit_s"]
    assert len(list(cache_dir.glob("latents_*.safetensors"))) == 1  # kept for the next run
