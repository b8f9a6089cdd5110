#!/usr/bin/env bash
# Test accuracy of the MNIST-1D line-search configs in float32, mixed_bfloat16 and mixed_float16
# (full budget, 8000 steps), one run per (optimizer, policy, seed); prints one line per run.
# Usage: PYTHONPATH=$PWD scripts/mixed_precision_accuracy.sh OUT_DIR [SEEDS...]   (default seed 0)
# Run from the repository root. Results are in BENCHMARKS.md ("Mixed precision").
set -euo pipefail
out=${1:?usage: $0 OUT_DIR [SEEDS...]}
shift
seeds=("${@:-0}")
mkdir -p "$out"
python=${PYTHON:-python}
for seed in "${seeds[@]}"; do
  for opt in armijo polyak wolfe; do
    for policy in float32 mixed_bfloat16 mixed_float16; do
      workdir="$out/${opt}_${policy}_s${seed}"
      "$python" -m experiments.train --gin_file="configs/mnist1d/mlp_$opt.gin" \
        --gin_param="train.mixed_precision='$policy'" --gin_param="train.seed=$seed" \
        --workdir="$workdir" >"$workdir.log" 2>&1
      "$python" -c "import json, sys; r = json.load(open(sys.argv[1])); \
print(sys.argv[2], r['status'], 'test_accuracy', r['final']['test_accuracy'], \
'steps_per_s', round(r['times']['steps_per_s'], 1))" "$workdir/result.json" "$opt $policy $seed"
    done
  done
done
