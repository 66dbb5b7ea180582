#!/usr/bin/env bash
# Everything a bare GPU machine should check, in one go, each phase under its own time limit:
#
#   bench/gpu_check.sh DATA_DIR [SECONDS]
#
# DATA_DIR: a dataset to train on (normal maps not needed); SECONDS: the timed training's budget (default 60).
# Phases: env (nvidia-smi, torch), native (the C++/CUDA kernels, for the GPU present), tcnn (tinycudann's Encoding
# from a carried .tcnn-src/, see tools/build_tcnn.sh), tests (-k "cuda or tcnn or native"), kernels
# (bench/kernels_bench.py, its NeRF step on DATA_DIR), profile (bench/profile_step.py), step (bench/step_bench.py:
# steps/s, samples/s and the GPU-busy share = profiler device time / wall time, of the fixed-batch step, the static
# step and the static step replayed as a CUDA graph; goal >= 80% busy), train (nerf-train with the time budget, then
# its evaluation), train15 / train15-nograph (15 s of training with and without --cuda-graph: the goal is the 400 px
# object scene at >= 34.4 dB within 15 s). One failing phase does not stop the next. Without CUDA (e.g. on a laptop) the
# CUDA-only phases are skipped, saying so, and the benches run reduced.
# Writes gpu_check.log (all output), summary.md (the table, also printed) and metrics-<phase>.json (each training
# run's) to $OUT, or to bench/gpu_check_out/ when OUT is unset. PYTHON (default python3): the Python with torch.
set -euo pipefail
export PYTHONUNBUFFERED=1

[[ $# -ge 1 && $# -le 2 && $1 != -h && $1 != --help ]] || {
    awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"
    [[ ${1:-} == -h || ${1:-} == --help ]]
    exit
}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=$(realpath "$1")
BUDGET=${2:-60}
[[ -f $DATA/transforms_train.json || -f $DATA/transforms.json ]] || { echo "gpu_check: $DATA: no transforms_train.json" >&2; exit 2; }
[[ $BUDGET =~ ^[0-9]+$ ]] || { echo "gpu_check: SECONDS must be a whole number, got '$BUDGET'" >&2; exit 2; }
OUT_DIR=${OUT:-$ROOT/bench/gpu_check_out}
mkdir -p "$OUT_DIR"
[[ -n ${OUT:-} ]] || echo '*' > "$OUT_DIR/.gitignore"  # the default folder keeps itself out of git
OUT_DIR=$(realpath "$OUT_DIR")
LOG=$OUT_DIR/gpu_check.log
: > "$LOG"
PY=$(command -v "${PYTHON:-python3}")
cd "$ROOT"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
PHASE_LOG=$(mktemp -d)
trap 'rm -rf "$PHASE_LOG"' EXIT
ROWS=()

# phase NAME LIMIT_S CMD...: run CMD under `timeout`, its output to the terminal and the log; a row in the table.
phase() {
    local name=$1 limit=$2 start=$SECONDS rc status
    shift 2
    echo "== $name (limit ${limit} s): $*" | tee -a "$LOG"
    set +o errexit
    timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$PHASE_LOG/$name" | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    set -o errexit
    case $rc in
        0) status=ok ;;
        124|137) status="timed out (${limit} s)" ;;
        *) status="failed (exit $rc)" ;;
    esac
    ROWS+=("| $name | $status | $((SECONDS - start)) | $(result "$name") |")
}

skip() {
    echo "== $1: skipped: $2" | tee -a "$LOG"
    ROWS+=("| $1 | skipped | 0 | $2 |")
}

# The line of a phase's output that goes into the table.
result() {
    local log=$PHASE_LOG/$1
    case $1 in
        env) grep -m1 '^torch ' "$log" ;;
        native) grep -m1 -o 'nerf_native: .*' "$log" || grep -m1 -i 'error' "$log" ;;
        tcnn) grep -m1 -e '^import tinycudann' -e 'rror' "$log" ;;
        tests) grep -E '(passed|failed|error)' "$log" | tail -1 | tr -d '=' ;;
        kernels) grep -m1 '^- native train step' "$log" || grep -m1 '^| native' "$log" ;;
        profile) grep -m1 'steps/s' "$log" ;;
        step) grep -m1 'CUDA graph |' "$log" || grep -m1 '^| budget, static' "$log" ;;
        train|train15|train15-nograph) [[ -f $OUT_DIR/metrics-$1.json ]] && "$PY" - "$OUT_DIR/metrics-$1.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{m['step']} steps in {m['train_seconds']} s on {m['backend']}/{m['device']}: PSNR {m['psnr']:.2f}, "
      f"SSIM {m['ssim']:.3f}")
EOF
        ;;
    esac | head -1 | cut -c1-160 | tr '|' '/' || true
}

# The phases' own commands, as scripts (`timeout` cannot run a shell function).
env_report() {
    command -v nvidia-smi >/dev/null && nvidia-smi
    "$PY" - <<'EOF'
import importlib.util, platform, torch
cuda = torch.cuda.is_available()
gpu = f"{torch.cuda.get_device_name()} (compute {'.'.join(map(str, torch.cuda.get_device_capability()))})" if cuda else "no CUDA"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), Python {platform.python_version()}, {gpu}")
print("optional:", ", ".join(f"{m} {'yes' if importlib.util.find_spec(m) else 'no'}"
                             for m in ("open3d", "PyQt5", "imageio_ffmpeg", "tinycudann")))
EOF
    command -v nvcc >/dev/null && nvcc --version | tail -2
    cmake --version | head -1
}

CUDA=0
"$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' && CUDA=1
phase env 60 bash -c "$(declare -f env_report); PY=$PY; env_report"

# torch's CMake takes the architectures from TORCH_CUDA_ARCH_LIST ("9.0"), ours from NERF_CUDA_ARCHITECTURES ("90").
NATIVE_ARGS=()
if [[ $CUDA == 1 ]]; then
    CAP=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
    export TORCH_CUDA_ARCH_LIST=$CAP
    NATIVE_ARGS=(-DNERF_CUDA_ARCHITECTURES="${CAP/./}")
fi
phase native 600 bash -c "cmake -S . -B build -DPython_EXECUTABLE=$PY ${NATIVE_ARGS[*]} \
    && cmake --build build --parallel $(nproc) && echo \"nerf_native: built (CUDA: $CUDA${CAP:+, sm ${CAP/./}})\""

if [[ $CUDA == 0 ]]; then
    skip tcnn "no CUDA device"
elif [[ ! -f .tcnn-src/bindings/torch/setup.py ]]; then
    skip tcnn "no .tcnn-src/ carried (tools/build_tcnn.sh prepare)"
else
    phase tcnn 480 env PYTHON="$PY" tools/build_tcnn.sh build .tcnn-src --target build/tcnn-site --encodings-only
    export PYTHONPATH=$ROOT/build/tcnn-site:$PYTHONPATH
fi

TEST_ARGS=(-q -p no:cacheprovider --continue-on-collection-errors tests/ -k "cuda or tcnn or native")
[[ $CUDA == 1 ]] || TEST_ARGS[-1]="cuda or tcnn"  # without CUDA they skip: the native CPU tests take long
phase tests 420 "$PY" -m pytest "${TEST_ARGS[@]}"

if [[ $CUDA == 1 ]]; then
    phase kernels 300 "$PY" bench/kernels_bench.py --no-append --nerf-data "$DATA"
    phase profile 240 "$PY" bench/profile_step.py "$DATA"
else
    phase kernels 300 "$PY" bench/kernels_bench.py --no-append --nerf-data "$DATA" --device cpu --log2-points 12 \
        --rounds 1 --no-compile --nerf-warmup 4 --nerf-rounds 2
    skip profile "no CUDA device (it profiles CUDA kernels)"
fi

if [[ $CUDA == 1 ]]; then
    phase step 400 "$PY" bench/step_bench.py "$DATA" --no-append
else
    phase step 400 "$PY" bench/step_bench.py "$DATA" --no-append --warmup-train 20 --steps 5
fi

# train_run NAME SECONDS [FLAGS...]: nerf-train for SECONDS, its metrics.json copied to $OUT_DIR/metrics-NAME.json.
train_run() {
    local name=$1 seconds=$2
    shift 2
    rm -rf "build/gpu_check_runs/$name" "$OUT_DIR/metrics-$name.json"
    phase "$name" $((seconds + 600)) bash -c "\"$PY\" -c 'import sys; from nerf.cli import train_main; \
sys.exit(train_main(sys.argv[1:]))' \"$DATA\" --time-budget $seconds --out build/gpu_check_runs/$name --quiet $* \
    && cp build/gpu_check_runs/$name/*/*/metrics.json \"$OUT_DIR/metrics-$name.json\""
}
train_run train "$BUDGET"
train_run train15 15
train_run train15-nograph 15 --no-cuda-graph

{
    echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), $(hostname)"
    echo
    echo "Dataset: $DATA; training budget $BUDGET s; log: gpu_check.log"
    echo
    echo "| phase | status | seconds | result |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} > "$OUT_DIR/summary.md"
echo
cat "$OUT_DIR/summary.md"
