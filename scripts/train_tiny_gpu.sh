#!/bin/bash
# The shipped tiny model's GPU stages, as run on one H100 (2026-11-25), in the repository root of a copy that
# holds data/tiny_pack (scripts/pack_dataset.py) and, on a machine without package access, a folder of wheels
# (hydra-core, omegaconf, antlr4-python3-runtime, lightning, trimesh, PyMCubes, rich: `pip download`).
#   bash scripts/train_tiny_gpu.sh 1.9 4.0 1.7                         # VAE / 3D DiT / 4D minutes
#   bash scripts/train_tiny_gpu.sh 1.9 9.0 4.7 --resume --only dit3d 4d  # continue (budgets are cumulative)
# Extra arguments go to scripts/train_tiny.py. Outputs: /tmp/tt (stages), /tmp/ship (export), $OUT/ (plot, split
# export, logs) when $OUT is set.
set -e
WHEELS=${WHEELS:-.gpuwheels}
if [ -d "$WHEELS" ]; then python3 -m pip install -q --no-index --no-deps "$WHEELS"/*.whl 2>&1 | tail -3 || true; fi
export PYTHONPATH=$PWD/src WANDB_MODE=offline
OUT=${OUT:-/tmp/tiny_gpu_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
O=()
for s in vae dit3d 4d; do
  O+=(--override "$s:data.num_workers=10" --override "$s:trainer.precision=32-true" --override "$s:training.ema_decay=0.995")
done
O+=(--override vae:training.batch_size=32 --override vae:training.val_every=400 --override vae:data.val_batch_size=32)
O+=(--override dit3d:training.batch_size=64 --override dit3d:training.base_lr=1e-3 --override dit3d:training.val_every=400)
O+=(--override dit3d:data.val_batch_size=16)
O+=(--override 4d:training.batch_size=16 --override 4d:training.val_every=300 --override 4d:attention.backend=dense)
set +e
python3 scripts/train_tiny.py --data data/tiny_pack --out /tmp/tt --ship /tmp/ship --plot "$OUT/tiny_loss_curves.png" \
  --trainer gpu --minutes "$1" "$2" "$3" "${O[@]}" "${@:4}"
rc=$?
if [ -f /tmp/ship/model.safetensors ]; then  # the device tool returns files <= 16 MB: split the export
  mkdir -p "$OUT/ship"
  cp /tmp/ship/config.yaml /tmp/ship/metrics.json "$OUT/ship/"
  split -b 15m /tmp/ship/model.safetensors "$OUT/ship/model.part-"
  sha256sum /tmp/ship/model.safetensors
fi
(cd /tmp/tt && tar czf "$OUT/logs.tgz" ./*.log dit/*/csv dit/*/export/config.yaml 2>/dev/null)
exit $rc
