#!/usr/bin/env bash
# The GPU suite: correctness on the card, DIConv and layer timings, and Fashion-MNIST end to
# end (fit 70k fields, train, evaluate every discretization) with the GPU's utilisation
# sampled every 250 ms. Results: $OUT/summary.json and $OUT/summary.md (plus each step's
# own JSON and log). Run from the repository root of a machine with one NVIDIA GPU:
#
#   OUT=/tmp/gpu DINET_DATA=/usr/share/datasets/fashion-mnist bash benchmarks/gpu_suite.sh
#
# Nothing is installed: torch (CUDA), Triton, numba, scipy, safetensors and matplotlib must
# be importable; the package runs from src/. LIMIT=N fits and trains on the first N training
# images only (a quick pass); EPOCHS (default 10) sets the training epochs.
set -euo pipefail
OUT=${OUT:-benchmarks/results/gpu}
PY=${PYTHON:-python3}
LIMIT=${LIMIT:-}
EPOCHS=${EPOCHS:-10}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_DEFAULT_FP_FUSION=1
mkdir -p "$OUT"
: > "$OUT/phases.tsv"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/card.csv"
# Utilisation samples; the sampler's streams go to files and it is stopped on every exit,
# so nothing outlives the suite.
nvidia-smi --query-gpu=timestamp,utilization.gpu --format=csv,noheader,nounits -lms 250 \
    > "$OUT/util.csv" 2> "$OUT/util.err" < /dev/null &
SAMPLER=$!
trap 'kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true' EXIT

# phase NAME COUNT COMMAND...: run a command, log it, record its wall time and item count.
phase() {
    local name=$1 count=$2
    shift 2
    echo "== $name: $*"
    local start end
    start=$(date +%s.%N)
    "$@" > "$OUT/$name.log" 2>&1 || { echo "FAILED: $name (see $OUT/$name.log)"; tail -20 "$OUT/$name.log"; exit 1; }
    end=$(date +%s.%N)
    printf '%s\t%s\t%s\t%s\n' "$name" "$start" "$end" "$count" >> "$OUT/phases.tsv"
    tail -3 "$OUT/$name.log"
}

phase check 0 "$PY" benchmarks/gpu_check.py
phase fused-tests 0 "$PY" -m pytest -q -p no:cacheprovider tests/nn/test_fused.py tests/nn/test_conv.py \
    tests/neighbors/test_device_build.py
phase conv 0 "$PY" -m dinet bench conv --device cuda --sizes 16384,65536,262144,1048576 \
    --out "$OUT/conv.json"
phase layers 0 "$PY" -m dinet bench layers --device cuda --out "$OUT/layers.json"

N_TRAIN=${LIMIT:-60000}
N_TEST=$([ -n "$LIMIT" ] && echo $((LIMIT / 6 > 0 ? LIMIT / 6 : 1)) || echo 10000)
rm -rf "$OUT/fields-train" "$OUT/fields-test" "$OUT/run"
phase fit-train "$N_TRAIN" "$PY" -m dinet fit --source fashion-mnist --split train \
    --limit "$N_TRAIN" --shard-size 4096 --device cuda --out "$OUT/fields-train"
phase fit-test "$N_TEST" "$PY" -m dinet fit --source fashion-mnist --split test \
    --limit "$N_TEST" --shard-size 4096 --device cuda --out "$OUT/fields-test"
phase train $((N_TRAIN * EPOCHS)) "$PY" -m dinet train --device cuda \
    --fields "$OUT/fields-train" --epochs "$EPOCHS" --out "$OUT/run"
phase eval "$N_TEST" "$PY" -m dinet eval --device cuda --run "$OUT/run" \
    --fields "$OUT/fields-test"
# dinet predict on the card, and the same items on the CPU: the answers must agree
phase predict "$N_TEST" "$PY" -m dinet predict --device cuda --run "$OUT/run" \
    --fields "$OUT/fields-test" --show 3 --out "$OUT/predict-cuda.npz"
phase predict-cpu 0 "$PY" -m dinet predict --device cpu --run "$OUT/run" \
    --fields "$OUT/fields-test" --items 0:256 --show 3 --out "$OUT/predict-cpu.npz"
phase predict-agree 0 "$PY" -c "
import numpy as np
gpu, cpu = np.load('$OUT/predict-cuda.npz'), np.load('$OUT/predict-cpu.npz')
diff = np.abs(gpu['probability'][:256] - cpu['probability']).max()
same = (gpu['label'][:256] == cpu['label']).mean()
print(f'cuda vs cpu on 256 items: labels equal {same:.1%}, max probability difference {diff:.2e}')
assert diff < 1e-2, diff  # TF32 matmuls on the card
"

kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
"$PY" benchmarks/gpu_summary.py "$OUT"
