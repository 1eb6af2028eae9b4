#!/usr/bin/env bash
# Everything the Triton backend needs a GPU for. Stages (default: all three, in order):
#   tests   the GPU-marked tests of the Triton and extension test files
#   parity  the triton and cuda rows of the parity suite on CUDA tensors
#   bench   the benchmark command's GPU grid (all cells, fp16/bf16/fp32, against torch.nn.LSTM)
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
        tests) timeout 420 python -m pytest tests/test_triton.py tests/test_triton_mogrifier.py tests/test_extension_build.py -m gpu -q -rs --durations=10 \
                   --junitxml="$OUT/tests.xml" > "$log" 2>&1 ;;
        parity) timeout 300 python -m pytest tests/test_parity.py -k "cuda and not cpu-" -q -rs \
                    --junitxml="$OUT/parity.xml" > "$log" 2>&1 ;;
        bench) timeout 480 python -m fusedrnn.bench --no-progress --backends triton cuda nn.LSTM \
                   --json "$OUT/results.json" --markdown "$OUT/table.md" --plot "$OUT/chart.png" > "$log" 2>&1 \
               && timeout 300 python -m fusedrnn.bench --no-progress --cells mogrifier --dtypes float32 \
                   --directions fwdbwd --backends triton eager \
                   --shapes 16x512x256x256 64x256x512x512 64x256x1024x1024 256x256x1024x1024 \
                   --json "$OUT/mogrifier_vs_eager.json" >> "$log" 2>&1 ;;
        *) echo "unknown stage $stage (tests, parity, bench)"; exit 2 ;;
    esac
    code=$?
    echo "== $stage: exit $code (124: timed out)"
    tail -n 25 "$log"
    status=$((status | code))
done
exit $status
