#!/usr/bin/env bash
# One prepared GPU check: the CUDA-marked tests, then the scale benchmark for
# Llama-2-7b's shape at full depth (32 layers, random weights) in float16 on 64 facts.
# Then the token search, old against new, on the same shape at full depth (2 facts x 512
# tokens). Writes into OUTDIR: env.json, tests.txt (+ tests.json summary), scale_7b.json,
# search_7b.json and their logs. Needs only torch, transformers, pandas and pyarrow
# (pytest for the tests, where present); no snakemake, no network.
#
#   bash benchmarks/gpu_check.sh OUTDIR [--quick]
#
# --quick (for trying the script on a CPU): tests on --device cpu are skipped as on
# a machine without CUDA, and the benchmark runs the organism's shape on 2 facts on the CPU.
set -uo pipefail
if [ $# -lt 1 ]; then
    echo "usage: bash benchmarks/gpu_check.sh OUTDIR [--quick]" >&2
    exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
QUICK=${2:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}

# jaxtyping only annotates shapes (the package never checks them at run time); where it
# is missing, a stand-in that accepts Float[Tensor, "..."] is put on the path.
if ! "$PY" -c "import jaxtyping" 2>/dev/null; then
    mkdir -p "$OUT/shim/jaxtyping"
    cat > "$OUT/shim/jaxtyping/__init__.py" <<'PYEOF'
"""Stand-in for jaxtyping's annotations (gpu_check.sh: the package was not installed)."""


class _Dim:
    def __class_getitem__(cls, item):
        return cls


Float = Int = Bool = Shaped = Num = _Dim
PYEOF
    export PYTHONPATH="$OUT/shim:$PYTHONPATH"
    echo "jaxtyping missing: using the annotation stand-in" | tee "$OUT/notes.txt"
fi

"$PY" - "$OUT/env.json" <<'PYEOF'
import json, platform, sys
import torch, transformers, pandas
info = {
    "python": sys.version.split()[0], "torch": torch.__version__,
    "transformers": transformers.__version__, "pandas": pandas.__version__,
    "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
    "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    "host": platform.node(),
}
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info))
PYEOF

status=0
if "$PY" -c "import pytest" 2>/dev/null; then
    DEV=cuda
    [ "$QUICK" = "--quick" ] && DEV=cpu
    "$PY" -m pytest -m gpu -q -p no:cacheprovider --device "$DEV" tests/test_gpu.py \
        -rs --junitxml "$OUT/tests.xml" > "$OUT/tests.txt" 2>&1
    rc=$?
    tail -n 5 "$OUT/tests.txt"
    # 5: no test collected/run (every one skipped is rc 0)
    [ $rc -ne 0 ] && [ $rc -ne 5 ] && status=1
    echo "{\"pytest_rc\": $rc}" > "$OUT/tests.json"
else
    echo "pytest is not installed: CUDA tests not run" | tee -a "$OUT/notes.txt"
    echo '{"pytest_rc": null, "reason": "pytest not installed"}' > "$OUT/tests.json"
fi

if [ "$QUICK" = "--quick" ]; then
    ARGS=(--preset organism --dtype bfloat16 --device cpu --facts 2 --batch-size 2
          --ov-rows 16 --search-tokens 4)
else
    ARGS=(--preset llama2-7b --dtype float16 --device cuda --facts 64 --batch-size 16
          --inference-batch-size 96 --ov-rows 4096 --search-tokens 256 --search-batch-size 128)
fi
"$PY" benchmarks/scale_benchmark.py "${ARGS[@]}" --json "$OUT/scale_7b.json" \
    2>&1 | tee "$OUT/scale_7b.log"
[ "${PIPESTATUS[0]}" -ne 0 ] && status=1

# The token search at full depth: the whole-prompt reference (eager, every layer's
# weights) against attack.token_search (shared prefix cache, SDPA), interleaved, with
# their agreement; last, so that nothing above waits for it.
if [ "$QUICK" = "--quick" ]; then
    SEARCH=(--preset organism --dtype float32 --device cpu --facts 2 --tokens 4 --repeats 1)
else
    SEARCH=(--preset llama2-7b --dtype float16 --device cuda --facts 2 --tokens 512
            --batch-size 128 --repeats 3)
fi
"$PY" benchmarks/token_search_benchmark.py "${SEARCH[@]}" --json "$OUT/search_7b.json" \
    2>&1 | tee "$OUT/search_7b.log"
[ "${PIPESTATUS[0]}" -ne 0 ] && status=1
echo "gpu_check: exit $status; files in $OUT"
exit $status
