#!/usr/bin/env bash
# run.sh: the main job (README): the paper's experiment on the embedded default. Installs what is
# missing for it (scripts/setup.sh main; SCADLES_SKIP_SETUP=1 skips that), builds scadles-train in
# Release and runs 8 edge devices on the local backend under the virtual clock,
# streaming Fashion-MNIST at the paper's Uniform S1 rates into the CNN: conventional synchronous
# SGD (ddp, batch 64 per device) against ScaDLES (1 s windows, cap 256). Prints the comparison
# table with the speedup and writes runs/uniform_s1/{summary.json,accuracy.png}.
# Extra arguments go to scadles-train (e.g. --set seeds=1,2,3).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh main
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)" --target scadles-train
build/apps/scadles-train --config apps/experiments/uniform_s1.json "$@"
