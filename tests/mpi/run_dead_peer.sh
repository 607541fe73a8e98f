#!/bin/sh
# run_dead_peer.sh: a 3-rank job where rank 2 fails (dead: exits without MPI_Finalize; hung:
# alive but never calls a collective) must end on its own, promptly, with a message that says
# what went wrong, instead of hanging.
#   usage: run_dead_peer.sh MPIEXEC NUMPROC_FLAG EXE --dead-peer|--hung-peer
# Passes when the job exits non-zero (not killed by our time limit) within LIMIT seconds and its
# output matches what the mode expects:
#   --dead-peer: Open MPI's runtime notices the exit and kills the job, naming rank 2
#                ("process rank 2" or "[[jobid,1],2]");
#   --hung-peer: our collective timeout fires on ranks 0 and 1 ("did not complete within") and
#                they MPI_Abort the job.
mpiexec=$1 npflag=$2 exe=$3 mode=$4
name=$(basename "$exe")
limit=${SD_MPI_TIME_LIMIT:-90}

. "$(dirname "$0")/mpi_common.sh"
flags=$(sd_mpiexec_flags "$mpiexec")

sd_mpi_probe "$mpiexec" "$npflag" "$exe" "$name" "$flags" || exit $?

start=$(date +%s)
out=$(timeout "$limit" "$mpiexec" $flags "$npflag" 3 "$exe" "$mode" 2>&1)
rc=$?
elapsed=$(( $(date +%s) - start ))
echo "$out"
echo "---- $name $mode: mpiexec exit $rc after ${elapsed} s"
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "FAIL: the job hung (killed after $limit s)"
    exit 1
fi
if [ $rc -eq 0 ]; then
    echo "FAIL: the job reported success although rank 2 failed"
    exit 1
fi
case "$mode" in
--dead-peer) pattern='process rank 2|\[\[[0-9]+,[0-9]+\],2\]' ;;
--hung-peer) pattern='did not complete within' ;;
*) echo "FAIL: unknown mode $mode"; exit 1 ;;
esac
if ! printf '%s\n' "$out" | grep -Eq "$pattern"; then
    echo "FAIL: the output does not say what happened (wanted /$pattern/)"
    exit 1
fi
echo "$name $mode: passed (the job stopped by itself in ${elapsed} s and said why)"
exit 0
