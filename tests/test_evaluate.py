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
    with pytest.raises(
        InputError, match=r"benchmark folder 'mine/bench' not found or incomplete.*benchmark=<"
    ):
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
    (root / "prep_failures.json").unlink()  # as after an interrupted preparation: resumed, not used as is
    assert resolve_benchmark(_cfg(tmp_path, "tiny/benchmark")) == root
    assert (root / "prep_failures.json").is_file()


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


def test_plot_eval_tables_and_plot(tmp_path):
    """scripts/plot_eval.py: the README's markdown tables (same formats as the printed table) and the plot."""
    import subprocess
    import sys

    run = tmp_path / "benchmark"
    run.mkdir()
    row = dict(chamfer=0.07591, iou=0.2843, fscore=0.6227, jitter=0.01104, motion_iou=0.3217, tflops=1.4241,
               seconds=15.71, memory_mb=1560.4, sequences=2)  # fmt: skip
    methods = {"4d": row, "variant:full": {**row, "tflops": 1.79, "iou": 0.25}}
    (run / "summary.json").write_text(json.dumps({"objects": 2, "benchmark": "b", "methods": methods}))
    (run / "per_sequence.csv").write_text(
        "object,method,chamfer,iou\ngear_100000,4d,0.1,0.2\nbox_100000,4d,0.05,0.4\n"
        "gear_100000,variant:full,0.2,0.1\nbox_100000,variant:full,0.06,0.3\n"
    )
    png = tmp_path / "plot.png"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_eval.py"), str(run / "summary.json"),
                          "--plot", str(png)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| 4d (blockmask) | 0.0759 | 0.284 | 0.623 | 0.0110 | 0.322 | 1.42 | 15.7 | 1560 |" in res.stdout
    assert "| full | 0.0759 | 0.250 |" in res.stdout
    assert "| box | 0.400 / 0.0500 | 0.300 / 0.0600 |" in res.stdout  # per category: IoU / Chamfer
    assert png.stat().st_size > 10_000
    unplotted = tmp_path / "not_written.png"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_eval.py"), str(run / "summary.json"),
                          "--plot", str(unplotted), "--no-plot"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0 and "| 4d (blockmask) | 0.0759 |" in res.stdout and not unplotted.exists()


@pytest.mark.parametrize("content", [None, "{not json", '{"methods": {}}'])
def test_plot_eval_bad_summary_is_one_sentence_and_status_2(tmp_path, content):
    """A missing, unparsable or foreign summary: one sentence naming the file, exit 2, no plot written."""
    import subprocess
    import sys

    path = tmp_path / "run" / "summary.json"
    if content is not None:
        path.parent.mkdir()
        path.write_text(content)
    png = tmp_path / "plot.png"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_eval.py"), str(path), "--plot", str(png)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 2, res.stderr[-2000:]
    assert (
        "Traceback" not in res.stderr
        and str(path) in res.stderr
        and len(res.stderr.strip().splitlines()) == 1
    )
    assert not png.exists()


def test_plot_eval_per_category_means_and_wins(tmp_path):
    """scripts/plot_eval.py per category: IoU / motion IoU / CD / F means over each category's sequences, and
    the metrics on which 4D beats per-frame there."""
    import subprocess
    import sys

    run = tmp_path / "benchmark"
    run.mkdir()
    row = dict(chamfer=0.05, iou=0.3, fscore=0.6, jitter=0.01, motion_iou=0.02, tflops=0.4, seconds=9.0,
               memory_mb=900.0, sequences=4)  # fmt: skip
    (run / "summary.json").write_text(
        json.dumps({"objects": 4, "benchmark": "b", "methods": {"4d": row, "per_frame": row}})
    )
    (run / "per_sequence.csv").write_text(
        "object,method,chamfer,iou,fscore,motion_iou\n"
        "box_100000,4d,0.0300,0.34,0.62,0.01\nbox_100001,4d,0.0392,0.40,0.72,0.03\n"
        "box_100000,per_frame,0.0465,0.31,0.61,0.02\nbox_100001,per_frame,0.0465,0.31,0.61,0.02\n"
        "door_100000,4d,0.1291,0.18,0.48,0.02\ndoor_100001,4d,0.1291,0.18,0.48,0.02\n"
        "door_100000,per_frame,0.1070,0.19,0.49,0.02\ndoor_100001,per_frame,0.1070,0.19,0.49,0.02\n"
    )
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_eval.py"), str(run / "summary.json"),
                          "--plot", str(tmp_path / "plot.png")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| box | 0.370 / 0.020 / 0.0346 / 0.670 | 0.310 / 0.020 / 0.0465 / 0.610 |" in res.stdout
    assert "box: 4d better than per_frame on iou, fscore, chamfer" in res.stdout
    assert "door: 4d better than per_frame on nothing" in res.stdout
    kept = tmp_path / "results"  # docs/results/ naming: <name>.json beside <name>_per_sequence.csv
    kept.mkdir()
    (kept / "eval_b.json").write_text((run / "summary.json").read_text())
    (kept / "eval_b_per_sequence.csv").write_text((run / "per_sequence.csv").read_text())
    (kept / "eval_c.json").write_text((run / "summary.json").read_text())  # no CSV beside it
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_eval.py"), str(kept / "eval_b.json"),
                          str(kept / "eval_c.json"), "--plot", str(tmp_path / "plot2.png")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("box: 4d better than per_frame on iou, fscore, chamfer") == 1
    assert "no per-sequence CSV beside" in res.stdout and "eval_c.json" in res.stdout


def test_vae_reconstruction_draws_its_point_pick_from_the_sequence_seed():
    """The encoder's FPS start is random: the ``vae_reconstruction`` row must depend on the sequence's seed only,
    not on what used the global RNG before it (it once did, so reruns of one sequence could differ)."""
    from types import SimpleNamespace

    from conftest import micro_components

    from sculpt4d.evaluate import DECODE_OPTIONS, vae_reconstruction

    vae = micro_components().vae.eval()
    pipeline = SimpleNamespace(components=SimpleNamespace(vae=vae), device=torch.device("cpu"))
    pipeline.decode = lambda z, **kwargs: z  # the latents themselves: what the pick changes
    surface = torch.randn(1, 2, 256, 7, generator=torch.Generator().manual_seed(0))
    surface[..., 3:6] = torch.nn.functional.normalize(surface[..., 3:6], dim=-1)
    kwargs = {**dict.fromkeys(DECODE_OPTIONS), "seed": 3}
    outs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        outs.append(vae_reconstruction(pipeline, surface, kwargs))
    assert torch.equal(outs[0], outs[1])
    other = vae_reconstruction(pipeline, surface, {**kwargs, "seed": 4})
    assert not torch.equal(outs[0], other)


def _grid_script():
    from conftest import load_script

    return load_script("vae_grid_iou")


def test_vae_grid_error_split_says_where_the_wrong_voxels_are():
    """scripts/vae_grid_iou.py: a surface in a slightly wrong place costs near voxels, a missing part far ones."""
    split = _grid_script().error_split
    truth = np.zeros((24, 24, 24), bool)
    truth[4:12, 4:20, 4:20] = True  # a slab
    truth[16:20, 4:20, 4:20] = True  # and a second, separate part
    assert split(truth, truth, 2.0) == {
        "iou": 1.0, "volume_ratio": 1.0, "false_pos_near": 0.0, "false_pos_far": 0.0,
        "false_neg_near": 0.0, "false_neg_far": 0.0,
    }  # fmt: skip
    grown = np.zeros_like(truth)
    grown[3:13, 4:20, 4:20] = True
    grown[15:21, 4:20, 4:20] = True  # both parts one voxel thicker on each side
    s = split(grown, truth, 2.0)
    assert s["false_pos_near"] > 0 and s["false_pos_far"] == s["false_neg_near"] == s["false_neg_far"] == 0.0
    missing = truth.copy()
    missing[16:20] = False  # the second part is not there at all
    s = split(missing, truth, 1.0)
    assert (
        s["false_neg_far"] > 0
        and s["false_neg_near"] > 0
        and s["false_pos_near"] == s["false_pos_far"] == 0.0
    )
    assert s["volume_ratio"] == pytest.approx(8 / 12) and s["iou"] == pytest.approx(8 / 12)


def test_category_means_averages_each_category_and_all_rows():
    """The diagnostics' shared summary: per-category means (sorted) and the mean over every row, not of categories."""
    from sculpt4d.evaluate import category_means

    rows = [
        {"category": "gear", "iou": 0.2, "f": 1.0},
        {"category": "door", "iou": 0.5, "f": 0.0},
        {"category": "gear", "iou": 0.4, "f": 0.0},
    ]
    out = category_means(rows, ["iou"])
    assert list(out["per_category"]) == ["door", "gear"]
    assert out["per_category"]["gear"] == {"iou": pytest.approx(0.3)} and out["per_category"]["door"] == {
        "iou": 0.5
    }
    assert out["all"] == {"iou": pytest.approx(1.1 / 3)}  # 0.367, where the mean of the categories is 0.4
    with pytest.raises(ValueError, match="no rows"):
        category_means([], ["iou"])


def test_vae_grid_iou_runs_on_an_export_and_a_prepared_split(tmp_path, micro_checkpoint, tiny_dataset):
    module = _grid_script()
    out = tmp_path / "grid.json"
    args = ["--ckpt", str(micro_checkpoint), "--benchmark", str(tiny_dataset), "--resolution", "12"]
    assert module.main([*args, "--frames", "2", "--stride", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    n_objects = len([p for p in tiny_dataset.iterdir() if (p / "render_cond").is_dir()])
    assert res["frames"] == 2 * n_objects and 0.0 <= res["all"]["iou"] <= 1.0
    assert set(res["per_category"]) and all(0.0 <= r["iou"] <= 1.0 for r in res["per_category"].values())
    assert module.main([*args[:2], "--benchmark", str(tmp_path / "nowhere")]) == 2


def test_draw_agreement_compares_draws_with_each_other_and_the_truth(
    tmp_path, micro_checkpoint, tiny_dataset
):
    """scripts/draw_agreement.py: per-sequence IoUs of draws against the truth and against each other."""
    from conftest import load_script

    module = load_script("draw_agreement")
    out = tmp_path / "agreement.json"
    args = ["--ckpt", str(micro_checkpoint), "--benchmark", str(tiny_dataset), "--resolution", "12"]
    assert module.main([*args, "--draws", "2", "--frames", "2", "--stride", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    n_objects = len([p for p in tiny_dataset.iterdir() if (p / "render_cond").is_dir()])
    assert len(res["per_sequence"]) == min(n_objects, 10) and set(res["per_category"])
    for row in [res["all"], *res["per_sequence"].values()]:
        assert 0.0 <= row["draw_vs_truth"] <= 1.0 and 0.0 <= row["draw_vs_draw"] <= 1.0
    assert module.main([*args, "--draws", "1"]) == 2
    assert module.main([*args[:2], "--benchmark", str(tmp_path / "nowhere")]) == 2


def test_probe_conditioner_reads_the_shape_out_of_image_features(tmp_path, micro_checkpoint, tiny_dataset):
    """scripts/probe_conditioner.py: ridge read-outs of four feature sets (and the model) scored per category."""
    from conftest import load_script

    module = load_script("probe_conditioner")
    out = tmp_path / "probe.json"
    args = ["--ckpt", str(micro_checkpoint), "--train", str(tiny_dataset), "--benchmark", str(tiny_dataset)]
    small = [
        "--frames",
        "2",
        "--stride",
        "1",
        "--resolution",
        "8",
        "--train-objects",
        "5",
        "--lambdas",
        "0.01",
        "1",
    ]
    assert module.main([*args, *small, "--model", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    columns = [*module.FEATURES, module.MODEL]
    assert set(res["all"]) == set(columns) and set(res["per_category"])
    assert all(0.0 <= res["all"][c] <= 1.0 for c in columns)
    assert set(res["lambda"]) == set(module.FEATURES) and set(res["lambda"].values()) <= {0.01, 1.0}
    assert module.main([*args[:4], "--benchmark", str(tmp_path / "nowhere")]) == 2
    assert module.main([*args, "--train-objects", "1"]) == 2


def test_probe_ridge_recovers_a_linear_map():
    """The probe's dual-form ridge at a vanishing strength reproduces an exact affine map on new inputs."""
    from conftest import load_script

    module = load_script("probe_conditioner")
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(5, 3)), rng.normal(size=3)
    x, x_new = rng.normal(size=(40, 5)), rng.normal(size=(7, 5))
    fit = module.ridge_fit(x, x @ w + b, 1e-10)
    np.testing.assert_allclose(module.ridge_predict(fit, x_new), x_new @ w + b, atol=1e-5)
    no_features = module.ridge_fit(np.zeros((4, 0)), np.arange(8.0).reshape(4, 2), 1.0)
    np.testing.assert_allclose(module.ridge_predict(no_features, np.zeros((2, 0))), [[3.0, 4.0]] * 2)
    assert module.grid_iou(np.array([[0.9, 0.1, 0.7]]), np.array([[1.0, 1.0, 0.0]]))[0] == pytest.approx(
        1 / 3
    )
