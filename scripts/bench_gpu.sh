#!/usr/bin/env bash
# bench_gpu.sh: the GPU benchmark against PyTorch on the same GPU. Builds in Release (BUILD, default
# build-gpu), runs scadles-bench_gpu (validates, then times ops, ResNet-18/VGG-19 training, Top-k, H2D,
# NCCL) and tests/bench/torch_gpu_peer.py (PYTHON, default /usr/bin/python3), then prints, for every
# model/batch and Top-k size/ratio both measured, ours / torch (images/s: > 1 means we are faster;
# Top-k: torch ms / our ms, > 1 means we are faster). Extra arguments go to scadles-bench_gpu.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build-gpu}
python=${PYTHON:-/usr/bin/python3}
out=${OUT_DIR:-$build/bench_gpu}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j"$(nproc)" --target scadles-bench_gpu
mkdir -p "$out"
"$build/apps/scadles-bench_gpu" "$@" | tee "$out/ours.txt"
if grep -q "skipped: no CUDA device" "$out/ours.txt"; then exit 0; fi
if [ -x "$python" ] && "$python" -c "import torch" 2>/dev/null; then
    "$python" tests/bench/torch_gpu_peer.py | tee "$out/torch.txt"
else
    echo "bench_gpu.sh: no PyTorch for $python; peer skipped"
    exit 0
fi
echo
echo "ratios (ours vs PyTorch eager on this GPU):"
awk -f scripts/bench_gpu_ratios.awk "$out/ours.txt" "$out/torch.txt"
