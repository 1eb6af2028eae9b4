#!/usr/bin/env bash
# Everything that needs a GPU, in one call of at most 10 minutes on a cold machine (the stages'
# time limits: 200 s for phase 1, 150 + 90 + 45 + 100 + 30 s for phase 2).
# Triton compiles dominate a cold call (PERF_NOTES), so the work runs in two phases:
#   1. in parallel processes (each at most WARM_S): the GPU-marked tests, the CUDA rows of the
#      parity suite, and a compile warm-up of every timed shape (the benchmark at T = 2, whose
#      correctness gate compiles the same layouts), filling Triton's disk cache;
#   2. alone: the timing (and each call's peak memory) beside cuDNN (nn.LSTM) and the eager loop,
#      LSTM and G2 at SHAPES, the Mogrifier at MOGRIFIER_SHAPES, decoding one step per call,
#      torch.compile's loop at COMPILED_SHAPES (default: the first of SHAPES), and the modules'
#      host time per one-step call against nn.LSTM's (bench/module_overhead.py, H = 512).
# Logs, JUnit XML, JSON, Markdown tables and a chart go under $OUT (default bench/results/gpu);
# status.txt lists the exit code of every stage (124: timed out). From the repository root:
#   bash bench/gpu_run.sh
# Dry run on a CPU (backends this machine lacks are skipped, not failed):
#   SHAPES=4x8x16x16 MOGRIFIER_SHAPES=4x8x16x16 BACKENDS="auto nn.LSTM" OUT=/tmp/x bash bench/gpu_run.sh
set -uo pipefail
OUT=${OUT:-bench/results/gpu}
WARM_S=${WARM_S:-200}
TIME_S=${TIME_S:-150}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET

# The LSTM issue's grid (B x T x I x H), and the same at T = 2 for the warm-up.
SHAPES=${SHAPES:-"16x512x256x256 64x256x512x512 64x256x1024x1024 256x256x1024x1024 16x1024x768x768 8x1024x128x128"}
MOGRIFIER_SHAPES=${MOGRIFIER_SHAPES:-"16x512x256x256 64x256x512x512"}
DECODE_SHAPES=${DECODE_SHAPES:-"1x64x512x512"}
COMPILED_SHAPES=${COMPILED_SHAPES:-${SHAPES%% *}}  # torch.compile: one size, its compiles are slow
BACKENDS=${BACKENDS:-"auto triton cuda nn.LSTM eager"}
at_t2() { for s in "$@"; do echo "$s" | awk -Fx '{printf "%sx2x%sx%s ", $1, $3, $4}'; done; }
BENCH=(python -m fusedrnn.bench --no-progress)

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
run warmup "$WARM_S" "${BENCH[@]}" --cells lstm g2 --shapes $(at_t2 $SHAPES) --directions fwd fwdbwd --backends $BACKENDS &
run warmup-mogrifier "$WARM_S" "${BENCH[@]}" --cells mogrifier --shapes $(at_t2 $MOGRIFIER_SHAPES) \
    --dtypes bfloat16 --directions fwd fwdbwd --backends $BACKENDS &
wait
echo "phase 1: $((SECONDS - start)) s" | tee -a "$OUT/status.txt"

run bench "$TIME_S" "${BENCH[@]}" --cells lstm g2 --shapes $SHAPES --directions fwd fwdbwd --backends $BACKENDS \
    --json "$OUT/results.json" --plot "$OUT/chart.png"
run bench-mogrifier 90 "${BENCH[@]}" --cells mogrifier --shapes $MOGRIFIER_SHAPES --dtypes bfloat16 \
    --directions fwd fwdbwd --backends $BACKENDS --json "$OUT/mogrifier.json"
run bench-decode 45 "${BENCH[@]}" --cells lstm --shapes $DECODE_SHAPES --dtypes float16 float32 \
    --directions decode --backends $BACKENDS --json "$OUT/decode.json"
run bench-compiled 100 "${BENCH[@]}" --shapes $COMPILED_SHAPES --dtypes bfloat16 --directions fwd fwdbwd \
    --backends auto nn.LSTM eager compiled --json "$OUT/compiled.json"
run module-overhead 30 python bench/module_overhead.py --hidden-size 512 --rounds 5 --backends auto triton cuda \
    --json "$OUT/module-overhead.json"
for json in results mogrifier decode compiled; do
    [ -f "$OUT/$json.json" ] && python -m fusedrnn.bench --report "$OUT/$json.json" > "$OUT/$json.md"
done
echo "total: $((SECONDS - start)) s" | tee -a "$OUT/status.txt"

for log in tests parity warmup warmup-mogrifier bench bench-mogrifier bench-decode bench-compiled module-overhead; do
    echo "== $log"
    tail -n 15 "$OUT/$log.log"
done
cat "$OUT/status.txt"
! grep -qv " 0$\|^phase\|^total" "$OUT/status.txt"
