#!/bin/bash
# Run benchmarks/device/measure.py on a GPU machine, from the repository root.
# Expects: .dev/bin/{llama-memprobe,llama-bench} (built as benchmarks/device/README.md says), .dev/pylib/gguf
# (gguf-py, pure Python), OUT set to the folder for the results. CUDA's runtime and cuBLAS are taken from the
# machine (any CUDA 13 install: the toolkit or the nvidia-* Python wheels).
set -u
: "${OUT:?set OUT}"
for f in .dev/bin/*.xz; do [ -e "$f" ] && xz -d -f "$f"; done
chmod +x .dev/bin/* 2>/dev/null
[ -e .dev/bin/llama-bench ] || ln -s llama-memprobe .dev/bin/llama-bench
for lib in libcublas.so.13 libcudart.so.13; do
    d=$(dirname "$(find /usr /opt /lib /lib64 -name "$lib" 2>/dev/null | head -1)")
    LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$PWD/.dev/lib" PYTHONPATH="$PWD/.dev/pylib:$PWD" PYTHONUNBUFFERED=1
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
ldd .dev/bin/llama-bench | grep -i "not found\|cuda\|cublas\|gomp"
.dev/bin/llama-bench --list-devices 2>&1 | tail -4
if [ -n "${SCRIPT:-}" ]; then  # another device script taking --bin/--out/--budget (decode_kernels.py)
    exec python3 "$SCRIPT" --bin .dev/bin --out "$OUT" --budget "${BUDGET:-240}"
fi
if [ -n "${CASES:-}" ]; then  # extra cases (benchmarks/device/cases.py) instead of measure.py's steps
    exec python3 benchmarks/device/cases.py --bin .dev/bin --out "$OUT" --budget "${BUDGET:-240}" "$CASES"
fi
python3 benchmarks/device/measure.py --bin .dev/bin --out "$OUT" --budget "${BUDGET:-480}" ${STEPS:+--steps $STEPS} ${ONLY:+--only $ONLY}
