#!/usr/bin/env bash
# setup.sh: installs the Debian packages one command needs, skipping what is already there.
#
#   scripts/setup.sh main    what building and running the main job needs (scripts/run.sh): the compiler,
#                            cmake, pkg-config, the required libraries (OpenBLAS, cJSON, xxHash, zlib; OpenMP comes
#                            with gcc), oneDNN (optional to the build, the CPU convolutions where present), the
#                            Fashion-MNIST data it trains on and gnuplot (its accuracy.png)
#   scripts/setup.sh tests   that and what the test suite uses (scripts/test.sh, which CI runs; the default
#                            when no group is named): MPI, librdkafka, libmosquitto and the mosquitto broker,
#                            openssl (TLS test material), xz (the GPU bundle rehearsal), PyTorch (checkpoint
#                            interop, the Python package's tests), pandas (their DataFrame half), clang with
#                            libFuzzer and OpenMP (scripts/fuzz.sh)
#   scripts/setup.sh bench   the main job's packages and PyTorch, the benchmark's peer (scripts/bench.sh), and
#                            ISA-L, a peer of tests/bench's kernel benchmarks (docs/performance.md; oneDNN, the
#                            other, is in main)
#   scripts/setup.sh --list GROUP   prints the group's packages on one line
#
# SCADLES_SKIP_SETUP=1     installs nothing: the packages are yours to manage. Only cmake, a C compiler and
#                          pkg-config are checked here; configure names every required library that is
#                          missing, and a test whose optional part is missing reports skipped.
# SCADLES_SETUP_DRY_RUN=1  says what is missing and the command that would install it; installs nothing.
#
# As root it runs apt-get; as another user, sudo apt-get when sudo is there; with neither it names the
# missing packages and exits 1. Exit status: 0 all present (or installed, or skipped), 1 something is
# missing and cannot be installed here, 2 bad usage. tests/cli/run_setup.sh checks each path.
set -euo pipefail

main_pkgs=(build-essential cmake pkg-config libopenblas-dev libcjson-dev libxxhash-dev zlib1g-dev libdnnl-dev
           dataset-fashion-mnist gnuplot-nox)
torch_pkgs=(python3 python3-torch)
bench_peer_pkgs=(libisal-dev)
test_pkgs=(libopenmpi-dev openmpi-bin librdkafka-dev libmosquitto-dev mosquitto openssl xz-utils "${torch_pkgs[@]}"
           python3-pandas python3-xxhash clang libclang-rt-dev libomp-dev)

usage() {
    echo "usage: scripts/setup.sh [main|tests|bench]   (default tests)" >&2
    echo "       scripts/setup.sh --list main|tests|bench" >&2
    echo "  SCADLES_SKIP_SETUP=1 installs nothing; SCADLES_SETUP_DRY_RUN=1 only says what it would install" >&2
    exit 2
}

list_only=0
if [[ ${1:-} == --list ]]; then
    list_only=1
    shift
    (($# == 1)) || usage
fi
(($# <= 1)) || usage
group=${1:-tests}
case $group in
main) pkgs=("${main_pkgs[@]}") ;;
tests) pkgs=("${main_pkgs[@]}" "${test_pkgs[@]}") ;;
bench) pkgs=("${main_pkgs[@]}" "${torch_pkgs[@]}" "${bench_peer_pkgs[@]}") ;;
*) echo "setup: unknown group '$group'" >&2; usage ;;
esac
if ((list_only)); then
    echo "${pkgs[*]}"
    exit 0
fi

if [[ ${SCADLES_SKIP_SETUP:-0} == 1 ]]; then
    echo "setup: SCADLES_SKIP_SETUP=1: installing nothing (the '$group' packages: ${pkgs[*]})"
    absent=()
    command -v cmake >/dev/null || absent+=("cmake (Debian package cmake)")
    command -v cc >/dev/null || command -v gcc >/dev/null || absent+=("a C compiler, cc (Debian package build-essential)")
    command -v pkg-config >/dev/null || absent+=("pkg-config (Debian package pkg-config)")
    if ((${#absent[@]})); then
        echo "setup: not on PATH: ${absent[*]}; install them, or unset SCADLES_SKIP_SETUP to let this script" \
             "install the '$group' packages" >&2
        exit 1
    fi
    exit 0
fi

if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
    echo "setup: no dpkg-query/apt-get here (not a Debian-based system?); install the equivalents of these Debian" \
         "packages yourself: ${pkgs[*]}; then run again with SCADLES_SKIP_SETUP=1" >&2
    exit 1
fi

missing=()
for p in "${pkgs[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == *"install ok installed"* ]] || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    echo "setup: all ${#pkgs[@]} '$group' packages present"
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null; then
    sudo=(sudo)
else
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: this user is not root and there is no sudo to install them. Ask an administrator to run" >&2
    echo "  apt-get install --no-install-recommends ${missing[*]}" >&2
    echo "or install them another way and run again with SCADLES_SKIP_SETUP=1 (then configure names any" >&2
    echo "required library still missing)." >&2
    exit 1
fi

if [[ ${SCADLES_SETUP_DRY_RUN:-0} == 1 ]]; then
    echo "setup: SCADLES_SETUP_DRY_RUN=1: missing ${missing[*]}; would run:"
    echo "  ${sudo[*]}${sudo:+ }apt-get update -qq"
    echo "  ${sudo[*]}${sudo:+ }env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${missing[*]}"
    exit 0
fi
echo "setup: installing ${missing[*]}${sudo:+ (through sudo)}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: all ${#pkgs[@]} '$group' packages present"
