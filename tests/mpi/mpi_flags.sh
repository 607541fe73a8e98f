# mpi_flags.sh: sourced by the tests/mpi/run_*.sh scripts. sd_mpiexec_flags MPIEXEC prints the
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
