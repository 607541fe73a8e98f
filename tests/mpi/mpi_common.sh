# mpi_common.sh: sourced by the tests/mpi/run_*.sh scripts. sd_same_losses A B TOL MIN compares two
# metrics.jsonl step by step, sd_mpi_probe checks that mpiexec can start a job, sd_dataset_job
# sets up a trainer job (below).
# sd_mpiexec_flags MPIEXEC prints the
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

# sd_mpi_probe MPIEXEC NUMPROC_FLAG EXE NAME FLAGS: a 1-rank run of EXE --probe. Returns 0 when it
# worked; 77 (skipped, with mpiexec's own words) when mpiexec cannot start a job here (the probe
# never printed that MPI started); 1 when MPI started but the probe failed.
sd_mpi_probe() {
    probe=$(timeout 120 "$1" $5 "$2" 1 "$3" --probe 2>&1)
    prc=$?
    [ $prc -eq 0 ] && return 0
    if printf '%s\n' "$probe" | grep -q "sd-mpi-probe: MPI started"; then
        echo "$4: FAILED: the 1-rank probe started MPI but exited with $prc:"
        echo "$probe" | tail -n 40
        return 1
    fi
    echo "$4: skipped: '$1 $5 $2 1 $4 --probe' failed (exit $prc): mpiexec cannot start a job here:"
    echo "$probe" | tail -n 20
    return 77
}

# sd_dataset_job NAME PREFIX: for scripts that run scadles-train under $mpiexec: exits 77 (skipped)
# when Fashion-MNIST is not installed; else sets dir (a fresh /tmp/PREFIX_* folder, removed when
# the script exits) and flags (sd_mpiexec_flags "$mpiexec").
sd_dataset_job() {
    [ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || {
        echo "$1: skipped: Fashion-MNIST not installed (scripts/setup.sh)"; exit 77; }
    dir=$(mktemp -d "/tmp/$2_XXXXXX") || exit 1
    trap 'rm -rf "$dir"' EXIT
    flags=$(sd_mpiexec_flags "$mpiexec")
}
