#!/usr/bin/env bash
# Everything the Triton backend needs a GPU for. Stages (default: all three, in order):
#   tests   the GPU-marked tests of tests/test_triton.py
#   parity  the Triton rows of the parity suite on CUDA
#   bench   issue 4's benchmark grid against torch.nn.LSTM (bench/triton_vs_cudnn.py)
# Results (JUnit XML, logs, JSON) go under $OUT (default bench/results/gpu). Kernel
# compilation dominates a cold run: if one call has too little time, run the stages
# in separate calls on the same warm machine (Triton's cache carries over).
# Usage, from the repository root: bash bench/gpu_run.sh [tests] [parity] [bench]
set -uo pipefail
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
stages=${*:-tests parity bench}
status=0

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" \
    | tee "$OUT/versions.txt" || exit 1

for stage in $stages; do
    log="$OUT/$stage.log"
    case $stage in
        tests) timeout 420 python -m pytest tests/test_triton.py -m gpu -q -rs --durations=10 \
                   --junitxml="$OUT/tests.xml" > "$log" 2>&1 ;;
        parity) timeout 300 python -m pytest tests/test_parity.py -k "triton and cuda" -q -rs \
                    --junitxml="$OUT/parity.xml" > "$log" 2>&1 ;;
        bench) timeout 420 python bench/triton_vs_cudnn.py --out "$OUT/triton_vs_cudnn.json" > "$log" 2>&1 ;;
        *) echo "unknown stage $stage (tests, parity, bench)"; exit 2 ;;
    esac
    code=$?
    echo "== $stage: exit $code (124: timed out)"
    tail -n 25 "$log"
    status=$((status | code))
done
exit $status
