#!/usr/bin/env bash
# test.sh: the test command (README, and .ci/run runs exactly this). Installs what is missing for the
# main job and the tests (scripts/setup.sh tests; SCADLES_SKIP_SETUP=1 skips that),
# builds in Release with warnings as errors (compiling the CUDA sources too whenever nvcc is
# present), runs the ctest suite, then builds and runs it again under ASan + UBSan, and the
# threaded tests (ring buffer, ingest thread, local collectives, stop + resume) under ThreadSanitizer, and
# fuzzes each input decoder for 10 s with libFuzzer (clang; docs/fuzzing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh tests
jobs=$(nproc)

echo "== Release build and tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs")

echo "== ASan + UBSan build and tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSCADLES_SANITIZE=ON -DSCADLES_ENABLE_CUDA=OFF
cmake --build build-asan -j"$jobs"
# (not under the sanitizers: the tests of the Python package, the install tree and setup.sh, whose
# own code is Python, CMake or shell, and the edge cluster's (label cluster: shell around mpirun and
# mosquitto; the engine's MPI and MQTT paths run here in test_distributed_mpi and test_dist_brokers);
# they ran against the same engine in the Release pass)
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --output-on-failure -j"$jobs" -E '^(python_scadles_core|python_scadles_torch|test_install|test_setup)$' -LE '^cluster$')

echo "== ThreadSanitizer: ring buffer, ingest thread, local collectives, the sparse allreduce, trace writer, stop signal + resume"
# (TSan builds leave oneDNN out, so these run our convolutions: third_party/dependencies.cmake says why)
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DSCADLES_TSAN=ON -DSCADLES_ENABLE_CUDA=OFF
cmake --build build-tsan -j"$jobs" --target test_stream_ring test_stream_replay test_comm_local test_sparse_allreduce test_trace test_resume
(cd build-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    ctest --output-on-failure -R '^(test_stream_ring|test_stream_replay|test_comm_local|test_sparse_allreduce|test_trace|test_resume)$')

echo "== Fuzzing (libFuzzer, clang, ASan + UBSan): 10 s per target"
scripts/fuzz.sh 10
