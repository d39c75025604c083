#!/bin/bash
# The speed issue's GPU measurements in one run on a CUDA machine (an H100/H200; about 8 minutes), results in $OUT:
#   1. exactness on CUDA: every backend (gather, flex, varlen, block_sparse_attn if built) against dense, and the
#      regional torch.compile against eager (pytest -m gpu);
#   2. the attention kernels at the paper's sizes (T = 8/16/32 x 4096 tokens, bf16): flex with its own and with
#      tuned kernel options, varlen, against dense SDPA (benchmarks/attention.py);
#   3. the paper-size DiT4D forward at T = 16 (CFG pair, bf16): flex / varlen, eager / compiled / CUDA graphs
#      (benchmarks/gpu_paper_size.py);
#   4. sampling memory at T = 32, default vs low_vram (benchmarks/memory.py);
#   5. with FULL=1, the paper model end to end: random weights in the release's sharded format, DINOv2-L,
#      50 steps x CFG, 16 frames decoded at 256^3, every export (benchmarks/predict.py); needs the wheels below.
# Python packages the GPU machine lacks travel as wheels in .whl/ (`git`-ignored; for its Python 3.12):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     hydra-core omegaconf antlr4-python3-runtime==4.9.3 trimesh PyMCubes rich pykdtree
#   bash scripts/gpu_speed_check.sh            # steps 1-4;  FULL=1 bash scripts/gpu_speed_check.sh  adds step 5
set -u
OUT=${OUT:-/tmp/gpu_speed_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline PYTHONPATH=$PWD/src
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/log.txt, keep going on failure
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date +%T))" | tee -a "$OUT/log.txt"
  timeout "$limit" "$@" 2>&1 | tee -a "$OUT/log.txt"
  local rc=${PIPESTATUS[0]}
  echo "== $name rc=$rc" | tee -a "$OUT/log.txt"
  [ "$rc" = 0 ] || status=1
}
step tests 180 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_attention.py tests/test_dit4d.py
step attention 150 python3 benchmarks/attention.py --device cuda --sizes 8x4096,16x4096,32x4096 --dtypes bf16 \
  --variants blockmask full --backends flex varlen \
  --flex-options BLOCK_M=64,BLOCK_N=64 BLOCK_M=128,BLOCK_N=64,num_warps=8 BLOCK_M=128,BLOCK_N=128,num_warps=8,num_stages=2 \
  --json "$OUT/attention.json"
step paper_forward 200 python3 benchmarks/gpu_paper_size.py --frames 16 --variants blockmask full \
  --backends flex varlen --compile none default reduce-overhead --json "$OUT/paper_forward.json"
step memory 120 python3 benchmarks/memory.py --device cuda --paper --frames 32 --json "$OUT/memory.json"
if [ "${FULL:-0}" = 1 ]; then
  step predict_paper 420 python3 benchmarks/predict.py --random-weights sculpt4d --rows base,compile-reduce-overhead \
    --repeats 1 sequence_length=16 device=cuda --json "$OUT/predict_paper.json"
fi
exit $status
