#!/usr/bin/env bash
# Paper-preset train steps on one GPU: `python -m benchmarks.accelerator` at the paper batch, in
# bfloat16 and then float32, with step times and % of the card's peak. At most 8 minutes of wall
# time in all (DEVICE_CHECK_BUDGET_S, default 470 s): every phase runs under `timeout`.
#
#   bash benchmarks/device_check.sh           # from anywhere; it works in the repository root
#
# Output (in $OUT when set, else a new /tmp/device_check.XXXXXX): device_check.log (everything
# printed), accelerator_bf16.{md,json}, accelerator_fp32.{md,json}, nvidia_smi.txt. The JSON
# files are rewritten after every study, so a phase cut short by its timeout keeps what it
# measured; the tables are then printed from them.
#
# Setup. Nothing is installed when the repository already imports (the package and its runtime
# dependencies) and JAX already sees a GPU. Otherwise, in this order:
#   * wheels in ./.whl (carried to a machine without network access; for this repository's import
#     chain beyond an image with jax, flax, optax and orbax: grain, array_record, dm-tree,
#     ml_collections, nibabel, tensorboardX, portpicker) are installed with --no-deps into
#     /tmp/site, which goes on PYTHONPATH;
#   * `pip install -e ".[test]"` (needs the package index; fails fast without one);
#   * `pip install -U "jax[cuda12]"`, only when JAX sees no GPU (it would otherwise replace a
#     working CUDA build, e.g. an image's jax-cuda13 plugin).
# Peaks (NVIDIA H200 SXM, dense): bf16 tensor cores ~989 TFLOP/s, fp32 (no tensor cores)
# ~67 TFLOP/s; override with PEAK_BF16_TFLOPS / PEAK_FP32_TFLOPS. XLA runs float32 convolutions
# and matrix products on a GPU at its default precision, which may use TF32 tensor cores
# (~494 TFLOP/s dense): a float32 "% of peak" above 100 means that.

set -uo pipefail  # no -e: a failed phase is reported and the next one still runs

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
START=$SECONDS
BUDGET=${DEVICE_CHECK_BUDGET_S:-470}
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")}
mkdir -p "$OUT_DIR" || exit 1
LOG="$OUT_DIR/device_check.log"
: >"$LOG"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PIP_FLAGS=(-q --disable-pip-version-check --retries 1 --timeout 15)
PEAK_BF16=${PEAK_BF16_TFLOPS:-989}
PEAK_FP32=${PEAK_FP32_TFLOPS:-67}
STEPS=${DEVICE_CHECK_STEPS:-3}   # the first is a warm-up; s/step is the median of the others

log() { printf '[device_check +%ss] %s\n' "$((SECONDS - START))" "$*" | tee -a "$LOG"; }
left() { echo $((BUDGET - (SECONDS - START))); }
# run_for SECONDS CMD...: CMD under `timeout`, never past the budget (10 s kept for the end).
run_for() {
  local want=$1 avail
  shift
  avail=$(($(left) - 10))
  if ((avail < want)); then want=$avail; fi
  if ((want < 5)); then
    log "no time left for: $*"
    return 124
  fi
  timeout --kill-after=5 "$want" "$@"
}

imports_ok() {
  run_for 90 "$PY" -c "import jaxseg, experiments.runner, benchmarks.accelerator" >>"$LOG" 2>&1
}
gpu_ok() {
  run_for 90 "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" >>"$LOG" 2>&1
}

log "repository $PWD; output $OUT_DIR; budget ${BUDGET}s; python $(command -v "$PY")"

# -- setup --------------------------------------------------------------------------------------
if ! imports_ok; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    log "installing the carried wheels in .whl into /tmp/site"
    run_for 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 || log "wheel install failed"
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
  fi
  if ! imports_ok; then
    log "installing the package: pip install -e .[test]"
    run_for 180 "$PY" -m pip install "${PIP_FLAGS[@]}" -e ".[test]" >>"$LOG" 2>&1 \
      || log "pip install -e .[test] failed (no package index?)"
  fi
fi
if ! gpu_ok; then
  log "JAX sees no GPU: pip install -U jax[cuda12]"
  run_for 180 "$PY" -m pip install "${PIP_FLAGS[@]}" -U "jax[cuda12]" >>"$LOG" 2>&1 \
    || log "pip install jax[cuda12] failed"
fi
if ! imports_ok; then
  log "FAILED: the repository does not import (see $LOG); carry the missing wheels in .whl"
  exit 2
fi
if ! gpu_ok; then
  log "FAILED: JAX sees no GPU (see $LOG)"
  exit 2
fi
run_for 20 nvidia-smi >"$OUT_DIR/nvidia_smi.txt" 2>&1 || true
run_for 30 "$PY" -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib',
  jaxlib.__version__, jax.devices())" 2>&1 | tee -a "$LOG"

# -- measurements -------------------------------------------------------------------------------
# phase NAME SECONDS ARGS...: one accelerator run; its table from the JSON if it was cut short.
phase() {
  local name=$1 seconds=$2 rc
  shift 2
  log "phase $name: python -m benchmarks.accelerator $* (at most ${seconds}s)"
  # Progress (stderr) to the console and the log, the table (stdout) to the .md file.
  run_for "$seconds" "$PY" -m benchmarks.accelerator --steps "$STEPS" --keep-going \
    --json "$OUT_DIR/accelerator_$name.json" "$@" 2>&1 >"$OUT_DIR/accelerator_$name.md" \
    | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  if ((rc == 124 || rc == 137)); then
    log "phase $name stopped by its timeout; the studies it finished:"
    run_for 30 "$PY" -m benchmarks.accelerator --report "$OUT_DIR/accelerator_$name.json" \
      >"$OUT_DIR/accelerator_$name.md" 2>>"$LOG"
  fi
  tee -a "$LOG" <"$OUT_DIR/accelerator_$name.md"
  log "phase $name exit status $rc"
  return "$rc"
}

# bf16 first (the accelerator's number) with 3/5 of the time left; float32 with the rest.
phase bf16 $(($(left) * 3 / 5)) --dtype bfloat16 --peak-tflops "$PEAK_BF16"
BF16_RC=$?
if (($(left) > 90)); then
  phase fp32 $(($(left) - 15)) --peak-tflops "$PEAK_FP32"
else
  log "skipping the float32 phase: $(left)s left"
fi
log "done in $((SECONDS - START))s; outputs in $OUT_DIR"
exit "$BF16_RC"
