# mpi_flags.sh: sourced by the tests/mpi/run_*.sh scripts. sd_same_losses A B TOL MIN compares two
# metrics.jsonl step by step (below). sd_mpiexec_flags MPIEXEC prints the
# extra mpiexec flags every test job needs: with Open MPI, --oversubscribe (more ranks than cores
# is fine for tests), --allow-run-as-root when run as root (containers), and -x for each sanitizer
# option variable that is set, so the ranks see the same ASan/LSan/UBSan/TSan settings as ctest.
sd_mpiexec_flags() {
    if "$1" --version 2>&1 | grep -Eqi "open ?mpi|openrte|open-mpi"; then
        f="--oversubscribe"
        [ "$(id -u)" = 0 ] && f="$f --allow-run-as-root"
        for v in ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS; do
            eval "isset=\${$v+x}"
            [ -n "$isset" ] && f="$f -x $v"
        done
        echo "$f"
    fi
}

# sd_same_losses A B TOL MIN: exit 0 when the metrics.jsonl files A and B have the same number of
# steps (at least MIN), equal global batches and losses within TOL relative (absolute below 1).
sd_same_losses() {
    awk -v A="$1" -v B="$2" -v T="$3" -v N="$4" 'function val(line, key,   s) { s = substr(line, index(line, "\"" key "\": ") + length(key) + 4); return s + 0 }
        BEGIN { n = 0; bad = 0
          while ((getline la < A) > 0) { if ((getline lb < B) <= 0) { bad = 1; break }
            n++; x = val(la, "loss"); y = val(lb, "loss")
            if (val(la, "global_batch") != val(lb, "global_batch")) bad = 1
            d = x - y; if (d < 0) d = -d; m = (x < 0 ? -x : x); if (d > T * (m > 1 ? m : 1)) bad = 1 }
          if ((getline lb < B) > 0) bad = 1
          if (n < N || bad) exit 1 }'
}
