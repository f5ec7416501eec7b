#!/usr/bin/env bash
# The one prepared GPU run of issue #15 (not run yet: no GPU has been lent to this work).
#
# Sized for the lent GPU machine: one command of at most 10 minutes, no network, its own python3 with a
# CUDA build of torch, transformers and accelerate, and nothing of this repository installed. So it runs
# from the checkout (PYTHONPATH, `python3 -m ppinvariants`, `pytest -p ppinvariants.plugin`), reads the
# tiny zoo's tokenizers from a carried cache, writes at most 8 files to $OUT, and keeps to a time budget.
#
# Here, once, with the project's virtualenv active (builds tiny:bart and tiny:pegasus into .gpu-cache/, which
# git ignores; a minute or two):
#     bash benchmarks/gpu.sh --prepare
# On the GPU machine, from the repository root, carrying .gpu-cache:
#     bash benchmarks/gpu.sh                      # results under $OUT (or ./gpu-results)
# Rehearsal on this CPU (small models, --quick): GPU_SH_DEVICE=cpu GPU_SH_MODELS=pegasus-96k GPU_SH_QUICK=1 \
#     GPU_SH_BUDGET=900 bash benchmarks/gpu.sh
#
# Per dtype (float16 first, then bfloat16, then float32), in this order, while the budget lasts:
#   1. benchmarks/bench.py on the BART-large-size and Pegasus-large-size random models: (a) record checks
#      and (b) the default check against bare generate(), (f) peak GPU memory of bare generate(), record
#      mode and streaming mode at batch 64 x 64 (target: streaming <= 1.1x bare)  -> bench-DTYPE.txt;
#   2. `ppinvariants check` on the same two models, then the shipped suite on them with two pytest-xdist
#      workers grouped by target (--dist loadgroup)                               -> check-DTYPE.txt.
# A step that fails does not stop the others (the exit status is then 1); a step the budget no longer allows
# is named in summary.txt.
set -u
if [ "${1:-}" = "--prepare" ]; then
    PPINVARIANTS_CACHE="$PWD/.gpu-cache" "${PYTHON:-python3}" -c \
        "from ppinvariants.targets import load_target; [load_target(s) for s in ('tiny:bart', 'tiny:pegasus')]" \
        && echo "gpu.sh: .gpu-cache ready; carry it to the GPU machine"
    exit $?
fi
OUT=${OUT:-gpu-results}
DEVICE=${GPU_SH_DEVICE:-cuda}
MODELS=${GPU_SH_MODELS:-bart-large,pegasus-large}
QUICK=${GPU_SH_QUICK:+--quick}
BUDGET=${GPU_SH_BUDGET:-540} # seconds for everything: the machine takes one command of 600 s at most
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PPINVARIANTS_CACHE=${PPINVARIANTS_CACHE:-$PWD/.gpu-cache}
mkdir -p "$OUT"
start=$SECONDS
summary="$OUT/summary.txt"
: > "$summary"
status=0 # 1 once a step that ran failed (a step the budget cut is named in summary.txt, not a failure)

left() { echo $((BUDGET - (SECONDS - start))); }

# step NAME FILE MIN_SECONDS COMMAND...: run COMMAND (output appended to FILE) under the time still left,
# unless less than MIN_SECONDS is left; one line per step in summary.txt.
step() {
    local name=$1 file=$2 need=$3
    shift 3
    local budget
    budget=$(left)
    if [ "$budget" -lt "$need" ]; then
        echo "$name: not run (${budget}s left of ${BUDGET}s, needs about ${need}s)" | tee -a "$summary"
        return
    fi
    local t0=$SECONDS
    echo "== $name" >> "$file"
    timeout "$budget" "$@" >> "$file" 2>&1
    local rc=$?
    [ "$rc" -ne 0 ] && status=1
    echo "$name: exit $rc in $((SECONDS - t0))s$([ "$rc" -eq 124 ] && echo ' (stopped by the budget)')" | tee -a "$summary"
}

$PY - <<PY > "$OUT/versions.txt" 2>&1 || { cat "$OUT/versions.txt"; echo "gpu.sh: torch cannot use $DEVICE"; exit 2; }
import torch, transformers, accelerate, platform
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "transformers", transformers.__version__, "accelerate", accelerate.__version__)
if "$DEVICE".startswith("cuda"):
    assert torch.cuda.is_available(), "no CUDA GPU visible to torch"
    print(torch.cuda.get_device_name(0))
PY
nvidia-smi >> "$OUT/versions.txt" 2>&1 || true
factories=""
for m in ${MODELS//,/ }; do factories="$factories benchmarks/bench.py:${m//-/_}"; done
for dtype in float16 bfloat16 float32; do
    [ "$DEVICE" = cpu ] && [ "$dtype" = float16 ] && continue # no float16 matmuls worth timing on a CPU
    step "bench $dtype" "$OUT/bench-$dtype.txt" 60 \
        $PY benchmarks/bench.py --device "$DEVICE" --dtype "$dtype" --models "$MODELS" --sections abf $QUICK
    step "check $dtype" "$OUT/check-$dtype.txt" 30 \
        $PY -m ppinvariants check $factories --device "$DEVICE" --dtype "$dtype"
    suite_models=""
    for f in $factories; do suite_models="$suite_models --ppi-model=$f"; done
    # Not installed there, so pytest does not find the plugin's entry point: load it by name (once).
    plugin="-p ppinvariants.plugin"
    $PY -c "import importlib.metadata as m; m.distribution('ppinvariants')" 2>/dev/null && plugin=""
    step "suite $dtype" "$OUT/check-$dtype.txt" 30 \
        $PY -m pytest $plugin --pyargs ppinvariants.suite -q -p no:cacheprovider \
        --ppi-device "$DEVICE" --ppi-dtype "$dtype" $suite_models -n 2 --dist loadgroup
done
echo "total: $((SECONDS - start))s of a ${BUDGET}s budget" | tee -a "$summary"
tail -n 14 "$OUT"/bench-*.txt 2>/dev/null
exit $status
