#!/bin/sh
# run_resume_mpi.sh: exact resume under mpiexec -n 4 (MPI backend, virtual clock). A scadles run
# with the paper's compression vote and injection is run uninterrupted, then stopped at step 4 with
# --stop-at and resumed; then stopped by SIGUSR1 sent to mpiexec (which forwards it to every rank)
# and resumed. metrics.jsonl, eval.jsonl and model.safetensors must be byte-identical to the
# uninterrupted run's.
#   usage: run_resume_mpi.sh MPIEXEC SCADLES_TRAIN SOURCE_DIR
mpiexec=$1 train=$2 src=$3
. "$(dirname "$0")/mpi_common.sh"
sd_dataset_job test_resume_mpi sd_resume_mpi  # skips without Fashion-MNIST; sets dir (removed at exit) and flags
common="--set devices.rates=40,25,12,30 --set eval_limit=300 --set eval_every_s=3 --set target_accuracy=0.99
 --set threads=1 --set width=0.25 --set modes=scadles --set backend=mpi --set compression.policy=paper --set injection.alpha=0.5
 --set injection.beta=0.5 --set partition.kind=slices --set partition.classes_per_device=2"
cfg="$src/apps/experiments/uniform_s1.json"
fail=0 pass=0
run() { # out_dir log max_steps extra...
    out=$1 log=$2 steps=$3; shift 3
    timeout 300 "$mpiexec" $flags -n 4 "$train" --config "$cfg" $common --set max_steps="$steps" --set out_dir="$out" "$@" \
        >> "$log" 2>&1
}
run "$dir/full" "$dir/full.log" 10
rc=$?
if [ $rc -ne 0 ]; then
    if grep -q "not enough slots\|could not be found\|ORTE_ERROR\|PMIX_ERROR" "$dir/full.log"; then
        echo "test_resume_mpi: skipped: mpiexec cannot start 4 ranks here:"; tail -n 10 "$dir/full.log"; exit 77
    fi
    echo "test_resume_mpi: FAILED: the uninterrupted run exited $rc:"; tail -n 30 "$dir/full.log"; exit 1
fi
compare() { # what out_dir
    for f in metrics.jsonl eval.jsonl model.safetensors; do
        if cmp -s "$dir/full/scadles-seed1/$f" "$2/scadles-seed1/$f"; then pass=$((pass + 1))
        else fail=$((fail + 1)); echo "FAIL: $1: $f differs from the uninterrupted run's"; fi
    done
}
# 1. --stop-at 4, then resume
run "$dir/stop" "$dir/stop.log" 10 --stop-at 4 || { echo "FAIL: the --stop-at run exited $?"; tail -n 20 "$dir/stop.log"; exit 1; }
grep -q "stopped (--stop-at 4)" "$dir/stop.log" || { echo "FAIL: no stop message"; tail -n 20 "$dir/stop.log"; exit 1; }
run "$dir/stop" "$dir/stop.log" 10 --resume "$dir/stop/checkpoint" || { echo "FAIL: the resume exited $?"; tail -n 20 "$dir/stop.log"; exit 1; }
compare "stop-at 4 + resume" "$dir/stop"
# 2. SIGUSR1 to mpiexec once step 2 is in metrics.jsonl (a line per step), then resume; the run
# is long enough (300 steps) that the signal lands well before its end
"$mpiexec" $flags -n 4 "$train" --config "$cfg" $common --set max_steps=300 --set out_dir="$dir/sig" \
    > "$dir/sig.log" 2>&1 &
pid=$!
i=0
while [ $i -lt 1200 ]; do
    [ -f "$dir/sig/scadles-seed1/metrics.jsonl" ] && [ "$(wc -l < "$dir/sig/scadles-seed1/metrics.jsonl")" -ge 2 ] && break
    sleep 0.1; i=$((i + 1))
done
kill -USR1 $pid
wait $pid
rc=$?
if [ $rc -ne 0 ] || ! grep -q "stopped (SIGUSR1)" "$dir/sig.log"; then
    fail=$((fail + 1)); echo "FAIL: SIGUSR1: exit $rc, no stop message:"; tail -n 20 "$dir/sig.log"
else
    step=$(sed -n 's/.*after step \([0-9]*\);.*/\1/p' "$dir/sig.log" | head -n 1)
    # to keep the test short, the resumed run and the reference both stop at step + 3 (a stop does
    # not change the trajectory): their outputs must be the same bytes
    run "$dir/sig" "$dir/sig.log" 300 --resume "$dir/sig/checkpoint" --stop-at $((step + 3)) ||
        { echo "FAIL: the resume exited $?"; tail -n 20 "$dir/sig.log"; exit 1; }
    run "$dir/sigref" "$dir/sigref.log" 300 --stop-at $((step + 3)) || { echo "FAIL: reference run"; exit 1; }
    for f in metrics.jsonl eval.jsonl eval.dat buffer.dat; do
        if [ -n "$step" ] && cmp -s "$dir/sigref/scadles-seed1/$f" "$dir/sig/scadles-seed1/$f"; then pass=$((pass + 1))
        else fail=$((fail + 1)); echo "FAIL: SIGUSR1 at step $step + resume: $f differs from the reference's"; fi
    done
fi
echo "test_resume_mpi: $pass passed, $fail failed"
[ $fail -eq 0 ]
