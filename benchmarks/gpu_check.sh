#!/usr/bin/env bash
# The one unattended check for a lent GPU (H100/H200), issue 22: <= 8 minutes; results in $OUT.
#
#   bash ../shared/tools/gpu-wheels.sh pytest      # here, once: fills .whl/ (hydra, datasets, pytest...)
#   OUT=/some/folder bash benchmarks/gpu_check.sh  # on the GPU machine, .whl carried; PY=python3 by default
#
# Steps, in order, each under its own time limit (seconds; sum 455, + 3 s grace each: <= 476 s); a step that
# fails or runs out of time is logged with its exit code (124: time limit) and the next one runs:
#   wheels  25  install the carried wheels into a temporary site
#   setup   10  print the GPU and versions
#   doctor 160  scaling-cli doctor --budget-s 140: versions, the fused loss against its fp32 oracle at 4 shapes
#               (every scheme), each backward scheme / torch.compile's loss / the 3-matmul floor at the GPU
#               default's shapes (filling the plan cache the sweep below then follows), a 20-step pack probe
#               against the plain compiled model, the memory estimate against the measured peak
#   tests   35  pytest -m gpu: kernel tests, the custom op under inductor, the pack memory record,
#               a second process hitting the compile cache
#   lce     40  kernel benchmark (benchmarks/bench_linear_cross_entropy.py) against torch.compile, Liger and
#               cut-cross-entropy (when installed), trimmed to 3 shapes, --profile
#   packs   60  pack throughput at the issue's shapes (d128/L4, d384/L6; V 32768, seq 1024, 16 seqs/run):
#               plain nanoGPT-style baseline at batch 64, our compiled solo step, compiled pack of 16/8
#   sweep  125  the GPU default (sweeps/small) from a cold process with every token budget x 0.05 (the data
#               cache cold, the compile and plan caches as doctor left them), the full wall time projected;
#               then fit and predict --params 7e9 on its store
# Without CUDA the GPU steps fail at once (logged, rc != 0) and the script still ends, in about a minute.
# Files in $OUT: gpu_check.log (each step's command, exit code, seconds; setup output), doctor.txt,
# doctor.json, tests.txt, lce.txt, packs.txt, sweep.txt, fit.json (the sweep's fit), memory.json (measured pack
# peaks), lce_plans.json (the plan cache: measured schemes per shape).
set -u
OUT=${OUT:?set OUT to the folder for the results}
PY=${PY:-python3}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
LOG="$OUT/gpu_check.log"
WORK=$(mktemp -d)
export SCALING_CLI_CACHE="$WORK/cache"   # cold: BPE, token arrays and compiled graphs built from scratch
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} TOKENIZERS_PARALLELISM=false HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
T0=$(date +%s)

# step NAME[>FILE] LIMIT COMMAND...: run with a time limit, output appended to $OUT/FILE.txt (FILE defaults
# to NAME), a line in the log; never exits.
step() {
  local name=${1%%>*} file=${1##*>} limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "=== [$name] limit ${limit}s, at +$((start - T0))s: $*" | tee -a "$LOG" "$OUT/$file.txt"
  timeout -k 3 "$limit" "$@" >> "$OUT/$file.txt" 2>&1
  rc=$?
  echo "=== [$name] exit $rc after $(($(date +%s) - start))s$([ $rc = 124 ] && echo ' (time limit; output so far stands)')" | tee -a "$LOG"
  tail -n 45 "$OUT/$file.txt"
}

setup() {
  local site="$WORK/site"
  mkdir -p "$site"
  if ls .whl/*.whl > /dev/null 2>&1; then
    timeout -k 3 25 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
      || echo "wheel install failed; going on with what the machine has"
  else
    echo "no .whl/ carried: assuming hydra-core, omegaconf, datasets and pytest are installed"
  fi
  # the project's import names without installing it (no network there): kernels/ is scaling_kernels
  ln -sfn "$PWD/kernels" "$site/scaling_kernels"
  ln -sfn "$PWD/conf" "$site/scaling_cli_conf"
  ln -sfn "$PWD/sweeps" "$site/scaling_cli_sweeps"
  echo "$site"
}

{ echo "gpu_check.sh at $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"; } > "$LOG"
SITE=$(setup 2>> "$LOG" | tail -n 1)
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
step setup 10 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; \
  '$PY' -c 'import torch, triton; print(\"torch\", torch.__version__, \"triton\", triton.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name())'"
cat "$OUT/setup.txt" >> "$LOG" && rm -f "$OUT/setup.txt"  # setup's output lives in the log

step doctor 160 "$PY" -m scaling_cli.cli doctor --budget-s 140 -o "$OUT/doctor.json"

step tests 35 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_kernels.py tests/test_kernel_op.py tests/test_memory.py \
  tests/test_compile_cache.py

step lce 40 "$PY" benchmarks/bench_linear_cross_entropy.py --shapes 16x16384x128x32768 16384x256x32768 \
  16384x512x50304 --impls floor,eager,compile,ours,liger,cce --schemes auto --rep 5 --profile

step packs 60 "$PY" benchmarks/bench_pack_throughput.py --device cuda --shapes 128x4,384x6 --packs 16,8 --compile \
  --batch 16 --plain-batch 64 --warmup 3 --steps 10

step sweep 125 "$PY" benchmarks/bench_gpu_sweep.py --sweep small --tokens-scale 0.05 --cache keep --n-boot 100 \
  --out "$WORK/results"
for f in fit.json memory.json; do [ -f "$WORK/results/$f" ] && cp "$WORK/results/$f" "$OUT/$f"; done
[ -f "$OUT/memory.json" ] || { [ -f "$SCALING_CLI_CACHE/packs/memory.json" ] && cp "$SCALING_CLI_CACHE/packs/memory.json" "$OUT/"; }
[ -f "$SCALING_CLI_CACHE/kernels/lce_plans.json" ] && cp "$SCALING_CLI_CACHE/kernels/lce_plans.json" "$OUT/"
echo "=== done in $(($(date +%s) - T0))s; files: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$LOG"
