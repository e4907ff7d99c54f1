#!/usr/bin/env bash
# The CUDA check (issue 22): on a machine with a CUDA GPU, from the repository root, in about
# 8 minutes: installs the carried wheels, then runs each step under its own time budget and
# writes everything under $OUT:
#   1. pytest tests/test_cuda.py, and the core's tests (test_cam.py, test_constant_channels.py)
#      with --device cuda;
#   2. compare: exact Score-CAM per image, ours at fp32/fp16/bf16 against pytorch-grad-cam and
#      torchcam (each at its best batch size), embedded model, resnet50 layer4, vit_b_16, at 224;
#   3. sweep: masked images per pass 64..1024, images per call, channels_last on/off, OOM back-off;
#   4. run: whole `scorecam run` processes on a 64-image folder, images/s, GPU utilisation;
#   5. limit: plain forward passes per second at the best batch and precision, efficiency;
#   then the report: $OUT/cuda-<gpu>.json (field "gpu": the device's name and the versions),
#   $OUT/check.log, $OUT/pytest.log, $OUT/dmon.log; the summary table is printed last.
#
# Usage notes (on the machine that calls the device tool, in the repository's root):
#   echo /.whl/ >> "$(git rev-parse --git-path info/exclude)"  # once, so .whl/ stays out of git
#                        (= echo /.whl/ >> .git/info/exclude in a clone; a worktree's .git is a file)
#   make cuda-wheels     # .whl/: the embedded model's packages, grad-cam (+ ttach), torchcam
#   device run: carry [".whl"], command "bash benchmarks/cuda_check.sh", timeout_s 560
# Without a CUDA GPU it stops at once (exit 3, one line). Options:
#   --dry-run      tiny models on the CPU, seconds, nothing measured: checks the plumbing
#   --steps LIST   comma list of pytest,compare,sweep,run,limit (default: all); a rerun of some
#                  steps on a still-warm machine merges with the parts of the earlier run
# Environment: OUT (default /tmp/scorecam-cuda-check-out), PYTHON (default python3), SITE (where
# the wheels are installed; default /tmp/site, dry run /tmp/scorecam-cuda-site), SCORECAM_COMMIT
# (the commit to record, where the copy has no .git).
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
DRY=0
ALL_STEPS=pytest,compare,sweep,run,limit
STEPS=$ALL_STEPS
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --steps) STEPS=${2:?--steps needs a list}; shift ;;
    --steps=*) STEPS=${1#--steps=} ;;
    *) echo "cuda_check: unknown option $1 (--dry-run, --steps LIST)" >&2; exit 2 ;;
  esac
  shift
done

PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/scorecam-cuda-check-out}
PARTS=${TMPDIR:-/tmp}/scorecam-cuda-check-parts
DRYFLAG=()
if [ "$DRY" = 1 ]; then
  SITE=${SITE:-/tmp/scorecam-cuda-site}
  DRYFLAG=(--dry-run)
else
  SITE=${SITE:-/tmp/site}
  # Fail early and clearly where there is no GPU: before any install, import or test.
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "cuda_check: no CUDA GPU here (nvidia-smi not found); run it on the device machine, or --dry-run" >&2
    exit 3
  fi
  if ! nvidia-smi -L >/dev/null 2>&1; then
    echo "cuda_check: no CUDA GPU here (nvidia-smi -L failed); run it on the device machine, or --dry-run" >&2
    exit 3
  fi
fi

mkdir -p "$OUT" || exit 2
# A full run starts from nothing; a --steps rerun keeps the earlier steps' parts (a warm machine).
[ "$STEPS" = "$ALL_STEPS" ] && rm -rf "$PARTS"
mkdir -p "$PARTS" || exit 2
LOG=$OUT/check.log
: >"$LOG"
say() { echo "$*" | tee -a "$LOG" >&2; }

# The carried wheels, with the device README's line (only the target folder may differ).
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl 2>&1 | tee -a "$LOG" >&2
  [ "${PIPESTATUS[0]}" = 0 ] || { say "cuda_check: installing .whl/*.whl into $SITE failed"; exit 2; }
elif [ "$DRY" = 0 ]; then
  say "cuda_check: no wheels in .whl/: run 'make cuda-wheels' and carry .whl"
  exit 2
else
  say "dry run: no .whl/*.whl; using what this Python can import"
fi
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
STEPS_TSV=$PARTS/steps.tsv
FAILED=0

# run_step NAME BUDGET COMMAND...: COMMAND under `timeout BUDGET`, its output into the log (and
# into $EXTRA_LOG when set).
run_step() {
  local name=$1 budget=$2 start rc
  shift 2
  say "== step $name (budget ${budget} s) $(date -u +%H:%M:%S)"
  start=$(date +%s)
  timeout -k 5 "$budget" "$@" 2>&1 | tee -a "$LOG" ${EXTRA_LOG:+"$EXTRA_LOG"}
  rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - start))" "$budget" >>"$STEPS_TSV"
  say "== step $name: exit $rc after $(($(date +%s) - start)) s"
  [ "$rc" = 0 ] || FAILED=1
  return "$rc"
}
wants() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
CHECK=("$PY" benchmarks/cuda_check.py)
ARGS=(--parts "$PARTS" "${DRYFLAG[@]}")

# Preflight: the GPU and the imports; exit 3 when torch sees no GPU.
run_step preflight 40 "${CHECK[@]}" preflight --budget 30 "${ARGS[@]}"
case $? in
  0) ;;
  3) say "cuda_check: torch sees no CUDA GPU; stopped"; exit 3 ;;
  *) say "cuda_check: preflight failed (see above); going on with the other steps" ;;
esac

# The budgets add up to 475 s; each Python step stops itself 10 s before its limit.
PYTEST=("$PY" -m pytest -q -p no:cacheprovider -rA)
DEVICE=cuda
if [ "$DRY" = 1 ]; then PYTEST+=(--collect-only); DEVICE=cpu; fi
if wants pytest; then
  : >"$OUT/pytest.log"
  EXTRA_LOG=$OUT/pytest.log run_step pytest-cuda 50 "${PYTEST[@]}" tests/test_cuda.py \
    --junitxml="$PARTS/pytest-cuda.xml"
  EXTRA_LOG=$OUT/pytest.log run_step pytest-core 30 "${PYTEST[@]}" tests/test_cam.py \
    tests/test_constant_channels.py --device "$DEVICE" --junitxml="$PARTS/pytest-core.xml"
fi
wants compare && run_step compare 120 "${CHECK[@]}" compare --budget 110 "${ARGS[@]}"
wants sweep && run_step sweep 80 "${CHECK[@]}" sweep --budget 70 "${ARGS[@]}"
wants run && run_step run 90 "${CHECK[@]}" run --budget 80 "${ARGS[@]}"
wants limit && run_step limit 45 "${CHECK[@]}" limit --budget 35 "${ARGS[@]}"
[ -f "$PARTS/dmon.log" ] && cp "$PARTS/dmon.log" "$OUT/dmon.log"
if ! run_step report 20 "${CHECK[@]}" report --out "$OUT" "${ARGS[@]}"; then
  tar -czf "$OUT/parts.tar.gz" -C "$PARTS" . && say "report failed: the parts are in $OUT/parts.tar.gz"
fi
say "cuda_check: done; outputs in $OUT$([ "$FAILED" = 1 ] && echo ' (some steps failed: see above)')"
exit "$FAILED"
