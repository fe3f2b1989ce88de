#!/usr/bin/env bash
# The device check of issue 14, one script, <= 8 minutes on one H100; results in $OUT (8 files).
#
#   bash ../shared/tools/gpu-wheels.sh pytest      # here, once: fills .whl/ (hydra, datasets, pytest...)
#   OUT=/some/folder bash benchmarks/gpu_check.sh  # on the GPU machine, .whl carried; PY=python3 by default
#
# Steps, in order, each under its own time limit (seconds; sum 455, + 3 s grace each: <= 476 s); a step that
# fails or runs out of time is logged with its exit code (124: time limit) and the next one runs:
#   wheels  25  install the carried wheels into a temporary site
#   setup   15  print the GPU and versions
#   tests   50  pytest -m gpu: kernel tests, the custom op under inductor, the pack memory record,
#               a second process hitting the compile cache
#   lce     40  kernel benchmark (benchmarks/bench_linear_cross_entropy.py), trimmed to 3 shapes, --profile
#   packs   85  pack throughput at the issue's shapes (d128/L4, d384/L6; V 32768, seq 1024, 16 seqs/run):
#               plain nanoGPT-style baseline at batch 64, our compiled solo step, compiled pack of 16/8
#   graphs  25  the d128/L4 pack of 16 again with CUDA graphs (train.compile_mode=reduce-overhead)
#   steps   45  real runs through the CLI, compiled, Triton loss: one alone (launcher.pack_size=1), a pack of 3
#   sweep  170  the GPU default (sweeps/small) from a cold process with every token budget x 0.05,
#               the full wall time projected; then fit and predict --params 7e9 on its store
# Files in $OUT: gpu_check.log (each step's command, exit code, seconds; setup output), tests.txt,
# lce.txt, packs.txt (and the graphs row), steps.txt, sweep.txt, fit.json (the sweep's fit), memory.json
# (measured pack peaks).
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
step setup 15 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; \
  '$PY' -c 'import torch, triton; print(\"torch\", torch.__version__, \"triton\", triton.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name())'"
cat "$OUT/setup.txt" >> "$LOG" && rm -f "$OUT/setup.txt"  # setup's output lives in the log

step tests 50 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_kernels.py tests/test_kernel_op.py tests/test_memory.py \
  tests/test_compile_cache.py

step lce 40 "$PY" benchmarks/bench_linear_cross_entropy.py --shapes 16x16384x128x32768 16384x256x32768 \
  16384x512x50304 --impls floor,eager,compile,ours,liger,cce --schemes auto --rep 5 --profile

step packs 85 "$PY" benchmarks/bench_pack_throughput.py --shapes 128x4,384x6 --packs 16,8 --compile --batch 16 \
  --plain-batch 64 --warmup 3 --steps 10

step "graphs>packs" 25 "$PY" benchmarks/bench_pack_throughput.py --shapes 128x4 --packs 16 --compile --batch 16 \
  --plain-batch 0 --warmup 5 --steps 10 --compile-mode reduce-overhead

SOLO="sweep=single model.d_model=256 model.n_layer=4 model.n_head=4 model.seq_len=1024 model.vocab_size=8192 \
  model.mlp=swiglu model.loss_impl=triton train=gpu train.tokens=null train.steps=40 train.compile=true \
  train.log_interval=10 train.eval_interval=40 eval=none"
step steps 45 bash -c "'$PY' -m scaling_cli.cli sweep --no-progress $SOLO launcher.pack_size=1 store.root=$WORK/alone \
  && '$PY' -m scaling_cli.cli sweep --no-progress $SOLO 'sweep.grid={optim.lr:[1e-3,2e-3,4e-3]}' \
     launcher.pack_size=3 store.root=$WORK/pack; \
  '$PY' -c 'import sys; from scaling_cli.store import load_runs
for root in sys.argv[1:]:
    r = load_runs(root); print(root, r[[\"status\", \"loss\"]].to_string())' $WORK/alone $WORK/pack; \
  grep -h -o '\"compile_s\": [0-9.]*\|\"pack_size\": [0-9]*' $WORK/alone/*/status.json $WORK/pack/*/status.json"

step sweep 170 "$PY" benchmarks/bench_gpu_sweep.py --sweep small --tokens-scale 0.05 --cache keep --n-boot 100 \
  --out "$WORK/results"
for f in fit.json memory.json; do [ -f "$WORK/results/$f" ] && cp "$WORK/results/$f" "$OUT/$f"; done
[ -f "$OUT/memory.json" ] || { [ -f "$SCALING_CLI_CACHE/packs/memory.json" ] && cp "$SCALING_CLI_CACHE/packs/memory.json" "$OUT/"; }
echo "=== done in $(($(date +%s) - T0))s; files: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$LOG"
