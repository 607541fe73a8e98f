#!/bin/sh
# run_mpi.sh: runs an MPI test program under mpiexec for ctest.
#   usage: run_mpi.sh MPIEXEC NUMPROC_FLAG NP EXE [ARGS...]
# First a 1-rank probe (EXE --probe): when mpiexec cannot start a job here (the probe never
# printed that MPI started) the test is reported skipped (exit 77) with mpiexec's own words. Then the real run with NP ranks under a time limit
# (SD_MPI_TIME_LIMIT seconds, default 300); a hang is reported as such (exit 124).
# With Open MPI: --oversubscribe (more ranks than cores is fine for tests), --allow-run-as-root
# when run as root (containers), and the sanitizer option variables are exported to the ranks.
mpiexec=$1 npflag=$2 np=$3 exe=$4
shift 4
name=$(basename "$exe")
limit=${SD_MPI_TIME_LIMIT:-300}

. "$(dirname "$0")/mpi_flags.sh"
flags=$(sd_mpiexec_flags "$mpiexec")

probe=$(timeout 120 "$mpiexec" $flags "$npflag" 1 "$exe" --probe 2>&1)
rc=$?
if [ $rc -ne 0 ]; then
    if printf '%s\n' "$probe" | grep -q "sd-mpi-probe: MPI started"; then
        echo "$name: FAILED: the 1-rank probe started MPI but exited with $rc:"
        echo "$probe" | tail -n 40
        exit 1
    fi
    echo "$name: skipped: '$mpiexec $flags $npflag 1 $name --probe' failed (exit $rc): mpiexec cannot start a job here:"
    echo "$probe" | tail -n 20
    exit 77
fi

timeout "$limit" "$mpiexec" $flags "$npflag" "$np" "$exe" "$@"
rc=$?
if [ $rc -eq 124 ]; then
    echo "$name: FAILED: still running after $limit s under $mpiexec -n $np (a hang); killed"
fi
exit $rc
