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
awk '
    FNR == NR && $1 == "result" && $2 == "model" { ours_img[$3 " " $5] = $7; next }
    FNR == NR && $1 == "result" && $2 == "topk"  { ours_tk[$4 " " $6] = $8; next }
    FNR == NR { next }
    $1 == "torch" && $2 == "model" && (($3 " " $5) in ours_img) {
        printf "  %-8s batch %-4s torch %-5s %9.1f img/s  ours %9.1f img/s  ours/torch %.2f\n",
               $3, $5, $7, $9, ours_img[$3 " " $5], ours_img[$3 " " $5] / $9 }
    $1 == "torch" && $2 == "topk" && (($4 " " $6) in ours_tk) {
        printf "  topk n %-9s r %-5s torch %8.3f ms  ours %8.3f ms  speedup %.2f\n",
               $4, $6, $8, ours_tk[$4 " " $6], $8 / ours_tk[$4 " " $6] }
' "$out/ours.txt" "$out/torch.txt"
