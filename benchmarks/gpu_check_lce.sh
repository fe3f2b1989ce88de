#!/usr/bin/env bash
# One command for the GPU half of issue 13 (fused linear + cross-entropy), ~8 minutes at most:
#   bash benchmarks/gpu_check_lce.sh [PYTHON]
# 1. the GPU-only tests of the kernels and the custom op (schemes vs an fp32 oracle, extra memory
#    after prepare(), compiled GPT and pack steps with the Triton loss under inductor);
# 2. the benchmark table (ours per backward scheme vs floor / eager / compile / Liger / CCE, extra
#    MiB, errors vs fp32) with the forward/backward profile split of ours.
# Each part has its own time limit, so one hanging part cannot eat the other's time.
set -u
PY=${1:-python}
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_kernels.py tests/test_kernel_op.py
echo "gpu tests: rc=$?"
timeout 330 "$PY" benchmarks/bench_linear_cross_entropy.py --profile
echo "benchmark: rc=$? (124 = hit its time limit; rows printed so far stand)"
