#!/bin/bash
# The tiny recipe on one GPU: data (made here, on every core) -> experiment=tiny_gpu_vae -> tiny_gpu_dit3d ->
# tiny_gpu_4d (every hyper-parameter in conf/experiment/tiny_gpu_*.yaml; 8 minutes of training) -> the held-out
# benchmark. Written 2026-12-02; its experiments are tested to be the CPU recipe at another scale; not yet run.
# Run in the repository root. On a machine without package access, carry the wheels `make gpu-wheels` puts in
# .whl/ (Python 3.12: hydra, omegaconf, trimesh, PyMCubes, libigl, embreex, ...): they are installed to /tmp/site.
#   bash scripts/train_tiny_gpu.sh                      # everything
#   bash scripts/train_tiny_gpu.sh --only 4d --resume   # extra arguments go to scripts/train_tiny.py
# Environment: OUT (results: curves, evaluation, the export split in 15 MB parts; default /tmp/tiny_gpu_out),
# RUNS (stage runs; /tmp/tt), DATA (the dataset; data/tiny), EVAL=0 skips the benchmark.
set -e
export PYTHONPATH=$PWD/src WANDB_MODE=offline PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
OUT=${OUT:-/tmp/tiny_gpu_out}
RUNS=${RUNS:-/tmp/tt}
DATA=${DATA:-data/tiny}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
if [ ! -f "$DATA/.complete" ]; then
  start=$(date +%s)
  python3 scripts/make_tiny_data.py --out "$DATA" --workers "$(nproc)"
  touch "$DATA/.complete"
  echo "[train_tiny_gpu] data: $(($(date +%s) - start)) s on $(nproc) cores"
fi
set +e
python3 scripts/train_tiny.py --data "$DATA" --out "$RUNS" --ship "$RUNS/ship" --plot "$OUT/tiny_loss_curves.png" \
  --trainer gpu --experiments tiny_gpu_vae tiny_gpu_dit3d tiny_gpu_4d "$@"
rc=$?
if [ $rc = 0 ] && [ "${EVAL:-1}" = 1 ]; then
  python3 -m sculpt4d.evaluate ckpt="$RUNS/ship" output_dir="$OUT/eval" gallery.objects=5
  rc=$?
fi
if [ -f "$RUNS/ship/model.safetensors" ]; then  # the device tool returns files of at most 16 MB
  mkdir -p "$OUT/ship"
  cp "$RUNS/ship/config.yaml" "$RUNS/ship/metrics.json" "$OUT/ship/"
  split -b 15m "$RUNS/ship/model.safetensors" "$OUT/ship/model.part-"
  sha256sum "$RUNS/ship/model.safetensors"
fi
(cd "$RUNS" && tar czf "$OUT/logs.tgz" ./*.log dit/*/csv dit/*/export/config.yaml 2>/dev/null)
exit $rc
