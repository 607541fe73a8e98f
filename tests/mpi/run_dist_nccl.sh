#!/bin/sh
# run_dist_nccl.sh: the distributed trainer on GPUs under mpiexec -n 2, with the gradients and BN
# statistics summed by NCCL in GPU memory (collectives nccl) against the same run summing host
# copies over MPI (collectives host): 8 scadles steps of the Fashion-MNIST CNN, virtual clock. NCCL
# sums in its own order, so the per-step losses must agree within 1e-3 relative (not bitwise), the
# global batches exactly, and both runs must end with identical BN statistics on every device.
# Without two usable GPUs (or without NCCL in the build) the runs must fail cleanly within the
# timeout, naming compute_backend or collectives; then the test reports skipped (77), or fails
# when SD_CUDA_REQUIRE=1 (set it on GPU machines).
#   usage: run_dist_nccl.sh MPIEXEC SCADLES_TRAIN SOURCE_DIR
mpiexec=$1 train=$2 src=$3
. "$(dirname "$0")/mpi_common.sh"
sd_dataset_job test_dist_nccl sd_dist_nccl  # skips without Fashion-MNIST; sets dir (removed at exit) and flags
common="--set devices.rates=40,25 --set max_steps=8 --set eval_limit=500 --set eval_every_s=4 --set target_accuracy=0.99
 --set threads=1 --set modes=scadles --set backend=mpi --set compute_backend=cuda"
unavailable() { # name log: a clean failure without GPUs / NCCL -> skip (or fail when required)
    if grep -q "not enough slots\|could not be found\|ORTE_ERROR\|PMIX_ERROR" "$2"; then
        echo "test_dist_nccl: skipped: mpiexec cannot start 2 ranks here:"; tail -n 10 "$2"; exit 77
    fi
    if grep -q "compute_backend cuda:\|collectives nccl:\|sd_comm_nccl_create" "$2"; then
        if [ "${SD_CUDA_REQUIRE:-0}" = 1 ]; then
            echo "test_dist_nccl: FAILED: SD_CUDA_REQUIRE=1 but the $1 run cannot use the GPUs:"; tail -n 10 "$2"; exit 1
        fi
        echo "test_dist_nccl: skipped: the $1 run failed cleanly without usable GPUs or NCCL:"
        grep -m 2 "compute_backend cuda:\|collectives nccl:\|sd_comm_nccl_create" "$2"; exit 77
    fi
    echo "test_dist_nccl: FAILED: the $1 run exited without a message naming compute_backend or collectives:"
    tail -n 30 "$2"; exit 1
}
for c in host nccl; do
    timeout 300 "$mpiexec" $flags -n 2 "$train" --config "$src/apps/experiments/uniform_s1.json" $common \
        --set collectives=$c --set out_dir="$dir/$c" > "$dir/$c.log" 2>&1
    rc=$?
    [ $rc -eq 124 ] && { echo "test_dist_nccl: FAILED: the $c run hung (killed after 300 s):"; tail -n 20 "$dir/$c.log"; exit 1; }
    [ $rc -ne 0 ] && unavailable $c "$dir/$c.log"
done
a="$dir/host/scadles-seed1/metrics.jsonl" b="$dir/nccl/scadles-seed1/metrics.jsonl"
if ! sd_same_losses "$a" "$b" 1e-3 8; then
    echo "test_dist_nccl: FAILED: losses or batches differ between collectives host and nccl (or too few steps)"
    head -n 3 "$a" "$b"; exit 1
fi
for c in host nccl; do
    grep -q '"bn_identical":[[:space:]]*true' "$dir/$c/summary.json" || {
        echo "test_dist_nccl: FAILED: collectives $c: BN statistics differ across devices"; exit 1; }
done
# compressed (Top-k every step, f16 values, momentum correction): on nccl the compressor runs on
# the GPU and gathers over NCCL, on host it works on host copies; the losses agree as above, and
# on nccl no step moves anything gradient-sized between device and host (metrics.jsonl's d2h and
# h2d counters: the loss, norms, the scatter check and the message headers are a few hundred bytes)
comp="--set compression.policy=always --set compression.ratio=0.05 --set compression.f16_values=true
 --set compression.momentum_correction=true"
for c in host nccl; do
    timeout 300 "$mpiexec" $flags -n 2 "$train" --config "$src/apps/experiments/uniform_s1.json" $common $comp \
        --set collectives=$c --set out_dir="$dir/z$c" > "$dir/z$c.log" 2>&1
    rc=$?
    [ $rc -eq 124 ] && { echo "test_dist_nccl: FAILED: the compressed $c run hung:"; tail -n 20 "$dir/z$c.log"; exit 1; }
    [ $rc -ne 0 ] && { echo "test_dist_nccl: FAILED: the compressed $c run failed:"; tail -n 20 "$dir/z$c.log"; exit 1; }
done
a="$dir/zhost/scadles-seed1/metrics.jsonl" b="$dir/znccl/scadles-seed1/metrics.jsonl"
if ! sd_same_losses "$a" "$b" 1e-3 8; then
    echo "test_dist_nccl: FAILED: compressed: losses or batches differ between the host and the GPU compressor"
    head -n 3 "$a" "$b"; exit 1
fi
grep -q '"compression": true' "$b" || { echo "test_dist_nccl: FAILED: the compressed nccl run did not compress"; exit 1; }
# per step on device 0: host->device = its batch (784 floats + a label per sample) + at most 4 KiB;
# device->host at most 4 KiB (the CNN's gradient is 115,752 bytes: a host copy of it would show)
big=$(sed -n 's/.*"batches": \[\([0-9]*\).*"h2d_bytes": \([0-9]*\).*"d2h_bytes": \([0-9]*\).*/\1 \2 \3/p' "$b" |
      awk '$2 > $1 * 3140 + 4096 || $3 > 4096' | wc -l)
seen=$(grep -c '"d2h_bytes"' "$b")
if [ "$seen" -lt 8 ] || [ "$big" -ne 0 ]; then
    echo "test_dist_nccl: FAILED: compressed nccl: $seen steps with transfer counters, $big moving gradient-sized data:"
    grep -o '"batches[^}]*' "$b" | head -n 8; exit 1
fi
echo "test_dist_nccl: 8 steps, collectives nccl and host agree (losses within 1e-3, batches equal, BN identical);"
echo "  compressed on the GPU: losses agree with the host compressor, no step moves gradient-sized data host<->device"
exit 0
