#!/usr/bin/env bash
# Everything the Triton backend needs a GPU for, in one call (about 10 minutes on an H100):
# the GPU tests, the Triton rows of the parity suite on CUDA, then issue 4's benchmark grid.
# Results (JUnit XML, logs, JSON) go under $OUT (default bench/results/gpu).
# Usage, from the repository root: bash bench/gpu_run.sh [--quick]
set -uo pipefail
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
status=0

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" \
    | tee "$OUT/versions.txt" || exit 1

timeout 240 python -m pytest tests/test_triton.py -m gpu -q -rs --junitxml="$OUT/test_triton_gpu.xml" \
    2>&1 | tee "$OUT/test_triton_gpu.log" | tail -25
status=$((status | PIPESTATUS[0]))

timeout 150 python -m pytest tests/test_parity.py -k "triton and cuda" -q -rs --junitxml="$OUT/test_parity_cuda.xml" \
    2>&1 | tee "$OUT/test_parity_cuda.log" | tail -15
status=$((status | PIPESTATUS[0]))

timeout 200 python bench/triton_vs_cudnn.py --out "$OUT/triton_vs_cudnn.json" "$@" 2>&1 | tee "$OUT/bench.log" | tail -20
status=$((status | PIPESTATUS[0]))
exit $status
