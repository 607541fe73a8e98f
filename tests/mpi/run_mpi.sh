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

. "$(dirname "$0")/mpi_common.sh"
flags=$(sd_mpiexec_flags "$mpiexec")

sd_mpi_probe "$mpiexec" "$npflag" "$exe" "$name" "$flags" || exit $?

timeout "$limit" "$mpiexec" $flags "$npflag" "$np" "$exe" "$@"
rc=$?
if [ $rc -eq 124 ]; then
    echo "$name: FAILED: still running after $limit s under $mpiexec -n $np (a hang); killed"
fi
exit $rc
