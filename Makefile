# sculpt4d — every task a newcomer needs. `make help` lists them.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
BLENDER_VENV ?= $(CURDIR)/.venv-blender
TINY_DATA ?= data/tiny
.DEFAULT_GOAL := help

help: ## list every target
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

install: ## install sculpt4d + dev tools (torch pinned to 2.13.0 via constraints.txt)
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev,sweep,app]"
	$(MAKE) install-browser

install-browser: ## Debian's chromium for the browser tests of the web app (they skip, saying why, without it)
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "install-browser: chromium could not be installed (needs apt-get as root); the browser tests will skip"

install-rembg: ## optional: rembg background removal (its u2net model file must be put in ~/.u2net by hand)
	$(PIP) install -e ".[rembg]"

install-sweep: ## optional: SLURM (submitit) launcher and Optuna sweeper for Hydra
	$(PIP) install -e ".[sweep]"

install-gpu: ## optional (CUDA machines): DeepSpeed; the MIT block-sparse kernel is a source build, see README
	DS_BUILD_OPS=0 $(PIP) install --no-build-isolation "deepspeed>=0.15,<0.17"

GPU_WHEELS := hydra-core==1.3.8 omegaconf==2.3.1 trimesh==5.2.0 PyMCubes==0.1.6 libigl==2.6.3 embreex==4.4.0.post1 \
	pykdtree==1.4.3 pygltflib==1.16.5 dataclasses-json==0.6.7 marshmallow==3.26.2 Deprecated==1.3.1
GPU_PLATFORMS := $(foreach n,17 24 27 28 31 34 35,--platform manylinux_2_$(n)_x86_64) --platform manylinux2014_x86_64

gpu-wheels: ## wheels (CPython 3.12, x86-64) a GPU machine without package access needs for scripts/train_tiny_gpu.sh -> .whl/
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(GPU_PLATFORMS) -d .whl $(GPU_WHEELS)
	$(PYTHON) -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3   # sdist only: a pure-Python wheel
	@du -sh .whl

install-blender: ## optional: Blender (bpy 4.5, numpy<2) in its own venv for the Blender prep backend
	$(PYTHON) -m venv $(BLENDER_VENV)
	PIP_CONSTRAINT= $(BLENDER_VENV)/bin/pip install "bpy==4.5.15"

test: ## run the CPU test suite (< 15 min on 2 cores)
	$(PYTHON) -m pytest -m "not slow and not gpu" -x -q

test-full: ## all tests including slow ones
	$(PYTHON) -m pytest -q

lint: ## ruff lint + format check
	$(PYTHON) -m ruff check src tests benchmarks scripts train.py predict.py app.py
	$(PYTHON) -m ruff format --check src tests benchmarks scripts train.py predict.py app.py

format: ## ruff autofix + format
	$(PYTHON) -m ruff check --fix src tests benchmarks scripts train.py predict.py app.py
	$(PYTHON) -m ruff format src tests benchmarks scripts train.py predict.py app.py

demo: ## run predict.py on the bundled box demo with the shipped tiny model
	$(PYTHON) predict.py input=demos/box output_dir=outputs/demo/box

app: ## the web app (frames / zip / video in, animated mesh in the browser) on http://127.0.0.1:7860
	$(PYTHON) app.py

demos: ## re-render data/demos/* from the procedural assets
	$(PYTHON) scripts/make_demos.py

data-tiny: ## make the tiny procedural 4D dataset (train + held-out benchmark split)
	$(PYTHON) scripts/make_tiny_data.py --out $(TINY_DATA) --ood tests/assets/gltf

train-tiny: ## train the tiny model: VAE -> 3D DiT -> 4D adapter (< 60 min on CPU)
	$(PYTHON) scripts/train_tiny.py --data $(TINY_DATA)

# one stage of make train-tiny-long's chain: python train.py experiment=<stage> $(TINY_STAGE_ARGS)
TINY_STAGE_ARGS = data.root=$(abspath $(TINY_DATA))/train output_folder=$(CURDIR)/outputs/train_tiny callbacks=plain

train-tiny-long: ## the shipped model, after train-tiny: its VAE -> 3D stage with uniform timesteps (tiny_dit3d_uniform), continued 35 min (tiny_dit3d_long); the VAE continued twice 30 min (tiny_vae_more, tiny_vae_more_2) -> the 3D stage continued 30 min with noisier timesteps on it (tiny_dit3d_vae_more_2) -> 4D stage (tiny_4d_vae_more_2)
	$(PYTHON) train.py experiment=tiny_dit3d_uniform $(TINY_STAGE_ARGS)
	$(PYTHON) train.py experiment=tiny_dit3d_long $(TINY_STAGE_ARGS)
	$(PYTHON) train.py experiment=tiny_vae_more $(TINY_STAGE_ARGS)
	$(PYTHON) train.py experiment=tiny_vae_more_2 $(TINY_STAGE_ARGS)
	$(PYTHON) scripts/train_tiny.py --data $(TINY_DATA) --only dit3d 4d --experiments tiny_vae tiny_dit3d_vae_more_2 tiny_4d_vae_more_2 --init outputs/train_tiny/dit/tiny_dit3d_long/export

evaluate: ## evaluate the shipped model on the held-out benchmark (tables in README)
	$(PYTHON) -m sculpt4d.evaluate

ablation: ## the paper's ablation at tiny scale: every variant x 2 seeds trained from the 3D export, evaluated (resumable; docs/ablation.md)
	$(PYTHON) scripts/ablation.py --data $(TINY_DATA) $(ABLATION_ARGS)

bench: ## run every benchmark (prints side-by-side ratios; JSON under outputs/bench)
	mkdir -p outputs/bench
	$(PYTHON) benchmarks/attention.py --json outputs/bench/attention.json
	$(PYTHON) benchmarks/flops.py --json outputs/bench/flops.json
	$(PYTHON) benchmarks/decoding.py --json outputs/bench/decoding.json
	$(PYTHON) benchmarks/prep.py --json outputs/bench/prep.json
	$(PYTHON) benchmarks/predict.py --json outputs/bench/predict.json
	$(PYTHON) benchmarks/evaluate.py --rows base,minres48 --json outputs/bench/evaluate.json

clean: ## remove caches and run outputs
	rm -rf outputs multirun logs .pytest_cache .ruff_cache

.PHONY: help install install-browser install-rembg app install-sweep install-gpu gpu-wheels install-blender test test-full lint format demo demos data-tiny train-tiny train-tiny-long evaluate ablation bench clean
