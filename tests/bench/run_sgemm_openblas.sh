#!/usr/bin/env bash
# run_sgemm_openblas.sh: runs bench_sgemm_openblas with one library per process, alternating
# processes (ours, OpenBLAS, ours, ...) ROUNDS times, with OpenBLAS free to pick its own kernels
# (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for these commands only), and prints per shape the
# median and min-max over all samples of all rounds (docs/performance.md).
#   tests/bench/run_sgemm_openblas.sh BUILD_DIR THREADS [ROUNDS (3)] [REPS per process (7)]
set -euo pipefail
build=${1:?usage: run_sgemm_openblas.sh BUILD_DIR THREADS [ROUNDS] [REPS]}
threads=${2:?usage: run_sgemm_openblas.sh BUILD_DIR THREADS [ROUNDS] [REPS]}
rounds=${3:-3}
reps=${4:-7}
bin=$build/tests/bench/bench_sgemm_openblas
[[ -x $bin ]] || { echo "run_sgemm_openblas: $bin not built (cmake --build $build --target bench_sgemm_openblas; needs OpenBLAS)" >&2; exit 1; }
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
echo "load before: $(cat /proc/loadavg)"
for ((r = 0; r < rounds; r++)); do
    for lib in ours openblas; do
        env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$bin" "$threads" "$reps" "$lib" >"$raw.out"
        grep -m1 '^OpenBLAS config' "$raw.out" >"$raw.cfg"
        grep '^RAW' "$raw.out" >>"$raw"
    done
done
cat "$raw.cfg"
rm -f "$raw.out" "$raw.cfg"
echo "load after: $(cat /proc/loadavg)"
python3 - "$raw" "$threads" <<'PY'
import statistics, sys
rows, order = {}, []
for line in open(sys.argv[1]):
    _, label, lib, *v = line.rstrip("\n").split("\t")
    if label not in rows:
        rows[label] = {"ours": [], "openblas": []}
        order.append(label)
    rows[label][lib] += [float(x) for x in v]
print(f"threads {sys.argv[2]}; GFLOP/s median [min-max] over all samples")
print(f"{'shape':32s} {'ours':24s} {'OpenBLAS':24s} ours/OB")
for label in order:
    o, p = rows[label]["ours"], rows[label]["openblas"]
    mo, mp = statistics.median(o), statistics.median(p)
    print(f"{label:32s} {mo:6.1f} [{min(o):6.1f}-{max(o):6.1f}]  {mp:6.1f} [{min(p):6.1f}-{max(p):6.1f}]  {mo / mp:.2f}x")
PY
