#!/usr/bin/env bash
# run.sh: the main job (README). Installs what is missing, builds in Release and trains the
# Fashion-MNIST CNN on Debian's dataset-fashion-mnist for 5 epochs (batch 64, SGD momentum 0.9,
# lr 0.02 with cosine decay), printing time and accuracy per epoch; outputs in runs/fmnist_cnn.
# Extra arguments go to scadles-train (e.g. --epochs 1, --model resnet20 --dataset cifar10).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
build/apps/scadles-train --model fmnist_cnn --dataset fashion-mnist --epochs 5 --batch 64 --out runs/fmnist_cnn "$@"
