#!/usr/bin/env bash
# run.sh: the main job (README). Installs what is missing (with PyTorch, the benchmark's peer),
# builds in Release and runs scadles-bench: CPU training throughput of the Fashion-MNIST CNN and
# ResNet-20 against PyTorch and the sgemm bound. Extra arguments go to scadles-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --with-torch
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
build/apps/scadles-bench "$@"
