#!/usr/bin/env bash
# Everything that needs a GPU, in one call of at most about 6 minutes on a cold machine.
# Triton compiles dominate a cold call (PERF_NOTES), so the work runs in two phases:
#   1. in parallel processes (each at most WARM_S): the GPU-marked tests, the CUDA rows of the
#      parity suite, and a compile warm-up of every timed shape (the benchmark at T = 2, whose
#      correctness gate compiles the same layouts), filling Triton's disk cache;
#   2. alone (at most TIME_S): the timing, side by side with cuDNN (nn.LSTM), LSTM and G2,
#      then the Mogrifier at two shapes.
# Logs, JUnit XML and JSON go under $OUT (default bench/results/gpu); status.txt lists the
# exit code of every stage (124: timed out). Usage, from the repository root:
#   bash bench/gpu_run.sh
set -uo pipefail
OUT=${OUT:-bench/results/gpu}
WARM_S=${WARM_S:-200}
TIME_S=${TIME_S:-150}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET

# The LSTM issue's grid (B x T x I x H; overridable for a dry run), and the same at T = 2 for the warm-up.
SHAPES=${SHAPES:-"16x512x256x256 64x256x512x512 64x256x1024x1024 256x256x1024x1024 16x1024x768x768 8x1024x128x128"}
WARM_SHAPES=$(for s in $SHAPES; do echo "$s" | awk -Fx '{printf "%sx2x%sx%s ", $1, $3, $4}'; done)
MOGRIFIER_SHAPES=${MOGRIFIER_SHAPES:-"16x512x256x256 64x256x512x512"}
BACKENDS=${BACKENDS:-"auto triton cuda nn.LSTM"}

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" \
    | tee "$OUT/versions.txt" || exit 1
: > "$OUT/status.txt"

run() {  # run NAME SECONDS COMMAND...: logs to $OUT/NAME.log, records the exit code
    local name=$1 seconds=$2
    shift 2
    timeout "$seconds" "$@" > "$OUT/$name.log" 2>&1
    echo "$name $?" >> "$OUT/status.txt"
}

start=$SECONDS
run tests "$WARM_S" python -m pytest tests -m gpu -q -rs --junitxml="$OUT/tests.xml" &
run parity "$WARM_S" python -m pytest tests/test_parity.py -k "cuda" -q -rs --junitxml="$OUT/parity.xml" &
run warmup "$WARM_S" python -m fusedrnn.bench --no-progress --cells lstm g2 --shapes $WARM_SHAPES \
    --backends $BACKENDS &
run warmup-mogrifier "$WARM_S" python -m fusedrnn.bench --no-progress --cells mogrifier \
    --shapes $(for s in $MOGRIFIER_SHAPES; do echo "$s" | awk -Fx '{printf "%sx2x%sx%s ", $1, $3, $4}'; done) \
    --backends triton cuda &
wait
echo "phase 1: $((SECONDS - start)) s" | tee -a "$OUT/status.txt"

run bench "$TIME_S" python -m fusedrnn.bench --no-progress --cells lstm g2 --shapes $SHAPES --backends $BACKENDS \
    --json "$OUT/results.json" --markdown "$OUT/table.md" --plot "$OUT/chart.png"
run bench-mogrifier 60 python -m fusedrnn.bench --no-progress --cells mogrifier --shapes $MOGRIFIER_SHAPES \
    --backends triton cuda --json "$OUT/mogrifier.json" --markdown "$OUT/mogrifier.md"
echo "total: $((SECONDS - start)) s" | tee -a "$OUT/status.txt"

for log in tests parity warmup bench bench-mogrifier; do
    echo "== $log"
    tail -n 15 "$OUT/$log.log"
done
cat "$OUT/status.txt"
! grep -qv " 0$\|^phase\|^total" "$OUT/status.txt"
