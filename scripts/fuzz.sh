#!/usr/bin/env bash
# fuzz.sh: builds the libFuzzer targets of tests/fuzz/ with clang (ASan + UBSan + libFuzzer, in the
# separate build directory build-fuzz) and runs each for a bounded time on a copy of its committed
# seed corpus. Prints per target the executions, the corpus size in files before and after,
# libFuzzer's coverage count (cov: instrumented edges reached) and the findings (crash-*, leak-*,
# timeout-*, oom-* files); exits 1 if any target found something (or
# did not run), 2 on a usage or setup error. docs/fuzzing.md describes the targets.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]        (default 30)
#   FUZZ_TARGETS="message idx" scripts/fuzz.sh  (a subset; default all five)
#
# Everything a run leaves is under build-fuzz/fuzz-run/<target>/: corpus/ (the seeds plus what
# the run added), artifacts/ (the findings), log. Reproduce a finding with
#   build-fuzz/tests/fuzz/fuzz_<target> build-fuzz/fuzz-run/<target>/artifacts/crash-...
# and keep it as tests/fuzz/findings/<target>/<name> (docs/fuzzing.md).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-30}
if ! [[ $secs =~ ^[0-9]+$ ]] || ((secs < 1 || secs > 86400)); then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET (1..86400, default 30)]" >&2
    exit 2
fi
targets=(${FUZZ_TARGETS:-message experiment idx cifar safetensors})
cc=${FUZZ_CC:-clang}
if ! command -v "$cc" >/dev/null; then
    echo "fuzz.sh: $cc not found: install the Debian packages clang, libclang-rt-dev and libomp-dev" >&2
    exit 2
fi

echo "== fuzz: configure and build (build-fuzz, $cc, ASan + UBSan + libFuzzer)"
# -Wno-pass-failed: clang reports '#pragma omp simd' loops it cannot vectorise once ASan
# instruments them; -Wno-error=unused-function: clang, unlike gcc, warns on unused static inline
# functions (stream/message.c). Every other warning stays an error.
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSCADLES_SANITIZE=ON -DSCADLES_FUZZ=ON -DSCADLES_ENABLE_CUDA=OFF \
    -DCMAKE_C_FLAGS="-Wno-pass-failed -Wno-error=unused-function" >build-fuzz.configure.log 2>&1 || {
    cat build-fuzz.configure.log >&2
    echo "fuzz.sh: configuring build-fuzz failed" >&2
    exit 2
}
rm -f build-fuzz.configure.log
cmake --build build-fuzz -j"$(nproc)" --target fuzzers

# Leaks are findings; a UBSan report aborts (the build has -fno-sanitize-recover=all).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_root=build-fuzz/fuzz-run
mkdir -p "$run_root"
status=0
rows=()
for t in "${targets[@]}"; do
    exe=build-fuzz/tests/fuzz/fuzz_$t
    seeds=tests/fuzz/corpus/$t
    if [[ ! -x $exe || ! -d $seeds ]]; then
        echo "fuzz.sh: no target '$t' (want $exe and $seeds)" >&2
        exit 2
    fi
    dir=$run_root/$t
    rm -rf "$dir"
    mkdir -p "$dir/corpus" "$dir/artifacts"
    cp "$seeds"/* "$dir/corpus/"
    seeds_n=$(find "$dir/corpus" -type f | wc -l)
    args=(-max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
          -artifact_prefix="$dir/artifacts/")
    [[ -f tests/fuzz/$t.dict ]] && args+=(-dict="tests/fuzz/$t.dict")
    echo "== fuzz: $t for ${secs}s ($seeds_n seeds)"
    rc=0
    # the outer timeout only guards against a fuzzer that ignores -max_total_time
    timeout --kill-after=30 $((secs + 120)) "$exe" "${args[@]}" "$dir/corpus" >"$dir/log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
    if [[ -z $execs ]]; then # no final stats (killed): the last status line's count
        execs=$(grep -Eo '^#[0-9]+' "$dir/log" | tail -1 | tr -d '#')
    fi
    cov=$(grep -Eo '(DONE|INITED) +cov: [0-9]+' "$dir/log" | tail -1 | grep -Eo '[0-9]+$' || true)
    corpus_n=$(find "$dir/corpus" -type f | wc -l)
    findings=$(find "$dir/artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
               -o -name 'oom-*' \) | sort)
    nfind=$(printf '%s' "$findings" | grep -c . || true)
    if ((nfind > 0 || rc != 0)); then
        status=1
        echo "   FINDING in $t (exit $rc); the end of $dir/log:"
        grep -E 'ERROR|SUMMARY|fuzz oracle|runtime error|Test unit written' "$dir/log" | head -20 | sed 's/^/   | /'
        [[ -n $findings ]] && printf '   -> %s\n' $findings
        if ((nfind == 0)); then echo "   (exit $rc without an artifact: see $dir/log)"; fi
    fi
    rows+=("$(printf '%-12s %8ss %12s %7s -> %-7s %6s %s' "$t" "$secs" "${execs:-?}" "$seeds_n" "$corpus_n" \
              "${cov:-?}" "$nfind")")
done

echo
echo "== fuzz summary ($(date -u +%Y-%m-%dT%H:%MZ), ${secs}s per target, $(nproc) cores)"
printf '%-12s %9s %12s %17s %6s %s\n' target time executions "corpus (seeds->)" cov findings
printf '%s\n' "${rows[@]}"
if ((status)); then
    echo "fuzz: FINDINGS (artifacts under $run_root/*/artifacts/)"
else
    echo "fuzz: no findings"
fi
exit "$status"
