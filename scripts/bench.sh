#!/usr/bin/env bash
# bench.sh: the CPU training benchmark: installs what is missing (python3-torch is the peer),
# builds in Release and runs scadles-bench (samples/s of the Fashion-MNIST CNN and ResNet-20
# against PyTorch with the same thread count, per-op GFLOP/s against the sgemm bound).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh bench
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
build/apps/scadles-bench "$@"
