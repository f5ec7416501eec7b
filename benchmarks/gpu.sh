#!/usr/bin/env bash
# The one prepared GPU run of issue #15 (not run yet: no GPU has been lent to this work).
#
# On a machine with a CUDA GPU and a CUDA build of torch (not the CPU wheel), from the repository root:
#     bash benchmarks/gpu.sh            # results under ./gpu-results (or $OUT)
# It runs, in float32, float16 and bfloat16:
#   1. `ppinvariants check` on the default tiny models on the GPU (every check on the device);
#   2. the shipped suite on tiny:bart and tiny:t5 on the GPU, two xdist workers grouped by target;
#   3. benchmarks/bench.py on a BART-large-size and a Pegasus-large-size model: (a) record checks and
#      (b) the default check against bare generate(), and (f) peak GPU memory of bare generate(),
#      record mode and streaming mode at batch 64 x 64 (target: streaming <= 1.1x bare).
# Each step's output goes to its own file; a failing step does not stop the others. About 20 minutes
# on one H200 (estimated, not measured).
set -u
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
python - <<'PY' || { echo "gpu.sh: no CUDA GPU visible to torch (install a CUDA build of torch)"; exit 2; }
import torch
assert torch.cuda.is_available()
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))
PY
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
python -m pip list 2>/dev/null | grep -iE "^(torch|transformers|accelerate|ppinvariants) " > "$OUT/versions.txt"
status=0
for dtype in float32 float16 bfloat16; do
    echo "== $dtype: check"
    ppinvariants check --device cuda --dtype "$dtype" --json "$OUT/check-$dtype.json" -q \
        > "$OUT/check-$dtype.txt" 2>&1 || status=1
    echo "== $dtype: shipped suite"
    python -m pytest --pyargs ppinvariants.suite -q -p no:cacheprovider --ppi-device cuda --ppi-dtype "$dtype" \
        --ppi-model=tiny:bart --ppi-model=tiny:t5 -n 2 --dist loadgroup > "$OUT/suite-$dtype.txt" 2>&1 || status=1
    echo "== $dtype: benchmark"
    python benchmarks/bench.py --device cuda --dtype "$dtype" --models bart-large,pegasus-large --sections abf \
        > "$OUT/bench-$dtype.txt" 2>&1 || status=1
done
tail -n 12 "$OUT"/bench-*.txt
exit $status
