"""The package installs without ``-e``: a wheel built from this checkout, installed into a fresh virtual
environment, runs ``sculpt4d-predict`` from a folder outside the repository, its configs read from the
installed package and the repository's demo and checkpoint given by path."""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "data" / "checkpoints" / "tiny"
DEMO = ROOT / "data" / "demos" / "box"
SCRIPTS = ("sculpt4d-train", "sculpt4d-predict", "sculpt4d-evaluate", "sculpt4d-prep", "sculpt4d-app")
PIP = ["-m", "pip", "--disable-pip-version-check", "--no-input"]
# no PYTHONPATH: a source tree on it would shadow the installed copy
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
ENV.update(
    OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline", MPLBACKEND="Agg", PYTHONWARNINGS="ignore"
)


def _cannot_build() -> str | None:
    for module in ("venv", "pip", "setuptools"):
        if importlib.util.find_spec(module) is None:
            return f"no {module} module to build and install a wheel with"
    if int(version("setuptools").split(".")[0]) < 68:
        return f"setuptools {version('setuptools')} < 68 (pyproject.toml's build requirement)"
    if os.name == "nt":
        return "the venv layout below is POSIX's (bin/)"
    return None


pytestmark = pytest.mark.skipif(_cannot_build() is not None, reason=str(_cannot_build()))


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (seeing this interpreter's packages: torch etc.) with the wheel of this checkout."""
    tmp = tmp_path_factory.mktemp("packaging")
    assert not tmp.resolve().is_relative_to(ROOT)
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout (and a stale
    # build/lib would leak deleted modules into later wheels). symlinks=True keeps src/sculpt4d/conf -> conf.
    src = tmp / "src-copy"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("src", "conf"):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=ignore)
    (src / "conf" / "local" / "machine.yaml").write_text("# a machine-local overlay\n")
    dist = tmp / "dist"
    _run([sys.executable, *PIP, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(src)], tmp)  # fmt: skip
    (wheel,) = dist.glob("sculpt4d-*.whl")

    env = tmp / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env)],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"cannot create a virtual environment here: {err}")
    if sys.prefix != sys.base_prefix:  # run from a venv: its packages are not the "system" ones, add them
        (purelib,) = (env / "lib").glob("python3*/site-packages")
        lines = [f"import site; site.addsitedir({p!r})\n" for p in site.getsitepackages()]
        (purelib / "_outer_env.pth").write_text("".join(lines))
    # the venv's python runs pip from the outer site-packages and installs into the venv; --ignore-installed:
    # leave an outer (editable) sculpt4d alone, the venv's own copy comes first on sys.path
    _run([str(env / "bin" / "python"), *PIP, "install", "--no-deps", "--no-index", "--ignore-installed", str(wheel)], tmp)  # fmt: skip
    return env


def test_the_venv_imports_its_own_copy_with_packaged_configs_and_every_console_script(venv: Path) -> None:
    code = (
        "import sculpt4d, sculpt4d.config as c, importlib.metadata as m\n"
        "print(sculpt4d.__file__); print(c.CONF_DIR)\n"
        "eps = [e for e in m.entry_points(group='console_scripts') if e.name.startswith('sculpt4d-')]\n"
        "[e.load() for e in eps]; print(' '.join(sorted(e.name for e in eps)))\n"
    )
    out = _run([str(venv / "bin" / "python"), "-c", code], cwd=venv.parent).stdout.split("\n")
    package, conf = Path(out[0]).resolve(), Path(out[1])
    assert package.is_relative_to(venv.resolve()) and not package.is_relative_to(ROOT), package
    for name in ("predict.yaml", "train.yaml", "evaluate.yaml", "prep.yaml", "app.yaml", "model/tiny.yaml"):
        assert (conf / name).is_file() and not (conf / name).resolve().is_relative_to(ROOT), conf / name
    assert not list(conf.glob("local/*.yaml"))  # machine-local overlays stay out of the wheel
    assert out[2].split() == sorted(SCRIPTS)
    assert all((venv / "bin" / s).is_file() for s in SCRIPTS)


def test_sculpt4d_predict_outside_the_repository(venv: Path) -> None:
    work = venv.parent / "elsewhere"
    work.mkdir()
    _run([str(venv / "bin" / "sculpt4d-predict"), f"input={DEMO}", f"ckpt={CKPT}", "output_dir=out",
          "sequence_length=2", "frame_stride=1", "num_steps=2", "octree_resolution=16", "device=cpu",
          "progress=false", "export.video=false", "export.strip_png=false", "export.inputs=false"], cwd=work)  # fmt: skip
    out = work / "out"
    assert (out / "sequence.glb").is_file() and sorted(p.name for p in out.glob("*.obj")) == [
        "frame_0000.obj",
        "frame_0001.obj",
    ]
    assert list((work / "outputs" / "predict" / "runs").glob("*/predict.log"))  # the run dir: under cwd
