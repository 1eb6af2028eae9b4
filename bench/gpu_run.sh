#!/usr/bin/env bash
# Everything that needs a GPU, in one call of at most 6 minutes on a cold machine: the stages'
# time limits add up to 355 s (phase 1: 100; phase 2: 85 + 45 + 35 + 20 + 25 + 20 + 25), and the
# reports at the end take seconds. The limits are what the first run on an H200 (2026-11-30,
# bench/results/h200/) needed, or all that fits: its GPU tests got through 66 of 186 in phase 1.
# Triton compiles dominate a cold call, so:
#   1. in parallel processes (each at most WARM_S): the C++/CUDA extension build, the GPU-marked
#      tests (over 6 workers where pytest-xdist is installed), the parity suite's Triton and cuda
#      rows at its T 9, B 2 shape (252 cases over 4 workers; the first H200 run got through 132 of
#      its some 1,400 CUDA rows in the time: all 96 of the torch backend's, then 36 of the
#      Triton's), and a compile warm-up of everything phase 2 times (the benchmark at T = 2, whose
#      correctness gate compiles the same layouts; a process per shape), filling the disk caches;
#   2. alone, most telling first: LSTM and G2 against cuDNN (nn.LSTM) at SHAPES in every dtype;
#      the LSTM on the cuda backend and the eager loop in bfloat16; the Mogrifier at
#      MOGRIFIER_SHAPES, then on the cuda backend in a process of its own (it crashed the first
#      run's Mogrifier stage with no row); what a Mogrifier round and rank H/8 cost at
#      VARIANT_SHAPES (bench/mogrifier_variants.py); decoding one step per call; the modules'
#      host time per one-step call against nn.LSTM's, and where it goes (bench/module_overhead.py,
#      H = 512, with torch.profiler's tables).
# A stage that reaches its limit gets SIGINT: pytest still writes its XML and summary, and the
# benchmark's JSON holds every configuration it finished (its report says how many of how many).
# Logs, JUnit XML, JSON, Markdown tables and a chart go under $OUT (default bench/results/gpu);
# status.txt lists every stage's exit code (124: stopped at its limit). ONLY="bench mogrifier"
# runs just those stages (a rerun); ONLY=compiled, not in the default run, times torch.compile's
# loop at COMPILED_SHAPES (measured in the first H200 run); ONLY=layouts, likewise, times every candidate
# layout of the LSTM sweep at LAYOUT_SHAPES in LAYOUT_DTYPES and of the Mogrifier's at
# MOGRIFIER_SHAPES (bfloat16) (bench/layouts.py), within the same limits. From the repository root:
#   bash bench/gpu_run.sh
# Dry run on a CPU (backends this machine lacks are skipped, not failed):
#   SHAPES=4x8x16x16 MOGRIFIER_SHAPES=4x8x16x16 DECODE_SHAPES=1x4x16x16 OUT=/tmp/x bash bench/gpu_run.sh
set -uo pipefail
OUT=${OUT:-bench/results/gpu}
WARM_S=${WARM_S:-100}
STAGES=${ONLY:-build tests parity bench baselines mogrifier variants decode overhead}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
export PYTHONFAULTHANDLER=1  # a crash in compiled code leaves the Python stack in its log

# The LSTM issue's grid (B x T x I x H); torch.compile's stage: the first shape at T <= 128.
SHAPES=${SHAPES:-"16x512x256x256 64x256x512x512 64x256x1024x1024 256x256x1024x1024 16x1024x768x768 8x1024x128x128"}
MOGRIFIER_SHAPES=${MOGRIFIER_SHAPES:-"16x512x256x256 64x256x512x512"}
VARIANT_SHAPES=${VARIANT_SHAPES:-"${MOGRIFIER_SHAPES##* }"}  # H >= 512, where the issue sets its low-rank target
DECODE_SHAPES=${DECODE_SHAPES:-"1x64x512x512"}
LAYOUT_SHAPES=${LAYOUT_SHAPES:-"$SHAPES 37x256x200x200 1x256x1000x1000"}  # and two where H % 16 != 0
LAYOUT_DTYPES=${LAYOUT_DTYPES:-bfloat16}  # float16's candidates are bfloat16's (the same element size)
COMPILED_SHAPES=${COMPILED_SHAPES:-$(echo "${SHAPES%% *}" | awk -Fx '{printf "%sx%sx%sx%s", $1, ($2 < 128 ? $2 : 128), $3, $4}')}
at_t2() { for s in "$@"; do echo "$s" | awk -Fx '{printf "%sx2x%sx%s ", $1, $3, $4}'; done; }
BENCH=(python -m fusedrnn.bench --no-progress)
LSTM=(--cells lstm g2 --directions fwd fwdbwd)
MOGRIFIER=(--cells mogrifier --dtypes bfloat16 --directions fwd fwdbwd)
DECODE=(--cells lstm --dtypes float16 float32 --directions decode --backends auto triton cuda nn.LSTM eager)
COMPILED=(--dtypes bfloat16 --directions fwd fwdbwd --backends auto nn.LSTM eager compiled)
OVERHEAD=(bench/module_overhead.py --hidden-size 512 --backends auto triton cuda)
VARIANTS=(bench/mogrifier_variants.py --dtypes bfloat16)
XDIST=$(python -c "import xdist" 2> /dev/null && echo "-n 6")
PARITY_XDIST=${XDIST:+-n 4}

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" \
    | tee "$OUT/versions.txt" || exit 1
: > "$OUT/status.txt"

run() {  # run NAME SECONDS COMMAND...: logs to $OUT/NAME.log, records the exit code
    local name=$1 seconds=$2
    shift 2
    [[ " $STAGES " == *" ${name%%-*} "* ]] || return 0
    timeout -s INT -k 15 "$seconds" "$@" > "$OUT/$name.log" 2>&1
    echo "$name $?" >> "$OUT/status.txt"
}

start=$SECONDS
run build "$WARM_S" python -c "import torch; from fusedrnn.bench.implementations import unavailable as why; \
reason = why('cuda'); print(reason or 'the cuda backend is ready'); exit(bool(reason) and torch.cuda.is_available())" &
run tests "$WARM_S" python -m pytest tests -m gpu -q -rs $XDIST --junitxml="$OUT/tests.xml" &
if python -c "import torch; exit(not torch.cuda.is_available())"; then  # else it selects no case (pytest exits 5)
    run parity "$WARM_S" python -m pytest tests/test_parity.py -k "(triton-cuda or cuda-cuda) and T9-B2" -q -rs \
        $PARITY_XDIST --junitxml="$OUT/parity.xml" &
fi
for shape in $SHAPES; do
    run "bench-warmup-$shape" "$WARM_S" "${BENCH[@]}" "${LSTM[@]}" --shapes $(at_t2 "$shape") --backends auto triton &
done
for shape in $MOGRIFIER_SHAPES; do
    run "mogrifier-warmup-$shape" "$WARM_S" "${BENCH[@]}" "${MOGRIFIER[@]}" --shapes $(at_t2 "$shape") --backends auto triton &
done
run variants-warmup "$WARM_S" python "${VARIANTS[@]}" --shapes $(at_t2 $VARIANT_SHAPES) &
run decode-warmup "$WARM_S" "${BENCH[@]}" "${DECODE[@]}" --shapes $(at_t2 $DECODE_SHAPES) --backends auto triton &
run compiled-warmup "$WARM_S" "${BENCH[@]}" "${COMPILED[@]}" --shapes $(at_t2 $COMPILED_SHAPES) --backends compiled &
run overhead-warmup "$WARM_S" python "${OVERHEAD[@]}" --rounds 1 &
run mogrifier-cuda-warmup "$WARM_S" "${BENCH[@]}" "${MOGRIFIER[@]}" --shapes $(at_t2 $MOGRIFIER_SHAPES) --backends cuda &
for shape in $LAYOUT_SHAPES; do
    run "layouts-warmup-$shape" "$WARM_S" python bench/layouts.py --shapes $(at_t2 "$shape") --dtypes $LAYOUT_DTYPES &
done
for shape in $MOGRIFIER_SHAPES; do
    run "layouts-warmup-mogrifier-$shape" "$WARM_S" python bench/layouts.py --cells mogrifier --shapes $(at_t2 "$shape") &
done
wait
echo "phase 1: $((SECONDS - start)) s" | tee -a "$OUT/status.txt"

run bench 85 "${BENCH[@]}" "${LSTM[@]}" --shapes $SHAPES --backends auto triton nn.LSTM --json "$OUT/results.json"
run baselines 45 "${BENCH[@]}" --cells lstm --directions fwd fwdbwd --shapes $SHAPES --dtypes bfloat16 \
    --backends auto cuda eager --json "$OUT/baselines.json"
run mogrifier 35 "${BENCH[@]}" "${MOGRIFIER[@]}" --shapes $MOGRIFIER_SHAPES --backends auto triton eager \
    --json "$OUT/mogrifier.json"
run mogrifier-cuda 20 "${BENCH[@]}" "${MOGRIFIER[@]}" --shapes $MOGRIFIER_SHAPES --backends cuda \
    --json "$OUT/mogrifier-cuda.json"
run variants 25 python "${VARIANTS[@]}" --shapes $VARIANT_SHAPES --json "$OUT/variants.json"
run decode 20 "${BENCH[@]}" "${DECODE[@]}" --shapes $DECODE_SHAPES --json "$OUT/decode.json"
run compiled 30 "${BENCH[@]}" "${COMPILED[@]}" --shapes $COMPILED_SHAPES --json "$OUT/compiled.json"
run overhead 25 python "${OVERHEAD[@]}" --rounds 3 --json "$OUT/module-overhead.json" \
    --profile "$OUT/module-overhead-profile.txt"
run layouts 170 python bench/layouts.py --shapes $LAYOUT_SHAPES --dtypes $LAYOUT_DTYPES --json "$OUT/layouts.json"
run layouts-mogrifier 50 python bench/layouts.py --cells mogrifier --shapes $MOGRIFIER_SHAPES \
    --json "$OUT/layouts-mogrifier.json"
for json in results baselines mogrifier mogrifier-cuda variants decode compiled layouts layouts-mogrifier; do  # also a stopped stage's rows
    [ -f "$OUT/$json.json" ] && python -m fusedrnn.bench --report "$OUT/$json.json" --plot "$OUT/$json.png" > "$OUT/$json.md"
done
echo "total: $((SECONDS - start)) s" | tee -a "$OUT/status.txt"

for log in "$OUT"/*.log; do
    echo "== $log"
    tail -n 8 "$log"
done
cat "$OUT/status.txt"
! grep -qv " 0$\|^phase\|^total" "$OUT/status.txt"
