#!/bin/sh
# run_train_cli.sh TRAIN ROOT: scadles-train's command line (and the benchmarks' usage errors): bad uses exit 2 with a message naming
# the flag (no argument to --config, a directory, --config twice, an unknown model or flag, an empty
# --resume, a flag that would change a resumed run), and SIGHUP stops a single-device run with a
# checkpoint (exit 129) that --resume continues, and a SIGKILL between periodic checkpoints is
# resumed without duplicated or missing lines, and drops after the last step are counted. Exits 77
# (skipped) without Fashion-MNIST.
T=$1
ROOT=$2
fail=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sd_cli_XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
expect() { # expect RC PATTERN ARGS...: exit status RC and a line of stderr matching PATTERN
  want=$1; pat=$2; shift 2
  "$T" "$@" > "$tmp/out" 2> "$tmp/err"; rc=$?
  if [ "$rc" != "$want" ] || ! grep -q -- "$pat" "$tmp/err"; then
    echo "FAIL: scadles-train $*: exit $rc (want $want), stderr:"; cat "$tmp/err"; fail=1
  fi
}
expect 2 "--config needs a value" --config
expect 2 "is a directory" --config "$ROOT/apps"
expect 2 "given twice" --config "$ROOT/apps/experiments/uniform_s1.json" --config b.json
expect 2 "needs the checkpoint directory" --config "$ROOT/apps/experiments/uniform_s1.json" --resume ""
expect 2 "unknown option '--bogus'" --bogus
expect 2 "--model foo" --model foo
expect 2 "--lr needs a value" --lr
expect 2 "--resume needs the run directory" --resume ""
expect 2 "--set needs --config" --set batch=4
# the benchmarks refuse bad arguments before measuring anything, naming them
D=$(dirname "$T")
bexpect() { # bexpect PROGRAM PATTERN ARGS...: exit 2 and PATTERN on stderr
  prog=$1; pat=$2; shift 2
  "$D/$prog" "$@" > "$tmp/out" 2> "$tmp/err"; rc=$?
  if [ "$rc" != 2 ] || ! grep -q -- "$pat" "$tmp/err"; then
    echo "FAIL: $prog $*: exit $rc (want 2), stderr:"; cat "$tmp/err"; fail=1
  fi
}
bexpect scadles-bench "'foo' is unknown" --models fmnist_cnn,foo
bexpect scadles-bench_topk "not a list of sizes" --sizes 0
bexpect scadles-bench_checkpoint "--dir CHECKPOINT_DIR is required"
bexpect scadles-bench_checkpoint "no .safetensors file" --dir "$ROOT/apps"
for b in scadles-bench_topk scadles-bench_stream scadles-bench_brokers scadles-bench_gpu scadles-bench_checkpoint; do
  [ -x "$D/$b" ] && bexpect $b "'--bogus'" --bogus
done
if [ ! -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "run_train_cli: Fashion-MNIST not installed: the training part is skipped"
  [ $fail = 0 ] && exit 77 || exit 1
fi
expect 2 "fewer than one batch" --train-limit 100 --batch 200 --out "$tmp/x"
# SIGHUP while training: a checkpoint, exit 128 + 1, then --resume finishes the run
"$T" --train-limit 1280 --eval-limit 200 --steps 60 --threads 1 --quiet --out "$tmp/run" > "$tmp/log" 2>&1 &
pid=$!
i=0
while [ $i -lt 1800 ] && [ "$(cat "$tmp/run/ddp-seed1/metrics.jsonl" 2>/dev/null | wc -l)" -lt 3 ]; do
  sleep 0.1; i=$((i + 1))
done
kill -HUP $pid
wait $pid; rc=$?
if [ $rc != 129 ] || ! grep -q "stopped (SIGHUP)" "$tmp/log" || [ ! -f "$tmp/run/checkpoint/run.safetensors" ]; then
  echo "FAIL: SIGHUP: exit $rc (want 129), log:"; cat "$tmp/log"; fail=1
fi
expect 2 "would change optimizer.lr" --resume "$tmp/run" --lr 0.3
"$T" --resume "$tmp/run" --quiet > "$tmp/log2" 2>&1; rc=$?
if [ $rc != 0 ] || ! grep -q "final: top-1" "$tmp/log2" || ! grep -q "(60 steps" "$tmp/log2"; then
  echo "FAIL: --resume after SIGHUP: exit $rc, log:"; cat "$tmp/log2"; fail=1
fi
# SIGKILL after a periodic checkpoint (every 4 steps), some steps past it: the resume cuts
# metrics.jsonl and eval.jsonl back to the checkpoint, so every step and evaluation is there once
"$T" --train-limit 1280 --eval-limit 200 --steps 60 --threads 1 --quiet --checkpoint-every 4 --out "$tmp/k" \
  > "$tmp/klog" 2>&1 &
pid=$!
i=0
while [ $i -lt 3600 ] && { [ ! -f "$tmp/k/checkpoint/run.safetensors" ] ||
      [ "$(cat "$tmp/k/ddp-seed1/metrics.jsonl" 2>/dev/null | wc -l)" -lt 10 ]; }; do
  sleep 0.05; i=$((i + 1))
done
kill -KILL $pid
wait $pid 2>/dev/null
"$T" --resume "$tmp/k" --quiet > "$tmp/klog2" 2>&1; rc=$?
m=$(wc -l < "$tmp/k/ddp-seed1/metrics.jsonl"); ev=$(wc -l < "$tmp/k/ddp-seed1/eval.jsonl")
steps=$(sed -n 's/.*"step": \([0-9]*\),.*/\1/p' "$tmp/k/ddp-seed1/metrics.jsonl" | sort -n | uniq | wc -l)
if [ $rc != 0 ] || [ "$m" != 60 ] || [ "$steps" != 60 ] || [ "$ev" != 3 ]; then
  echo "FAIL: SIGKILL + --resume: exit $rc, metrics.jsonl $m lines ($steps distinct steps, want 60), eval.jsonl $ev (want 3)"
  cat "$tmp/klog2"; fail=1
fi
# every drop counts, whatever step it falls in: a real-clock run whose small drop-newest buffers keep
# overflowing after the last step; summary.json's samples_dropped is the sum of drops.json's totals
# and more than the last step's metrics line saw (the buffers overflowed after it too)
"$T" --config "$ROOT/apps/experiments/uniform_s1.json" --set devices.rates=4000,3000 --set clock=real \
  --set buffer.policy=persistence --set buffer.full=drop-newest --set buffer.capacity=64 --set max_steps=4 \
  --set modes=scadles --set window_s=0.2 --set eval_limit=100 --set width=0.25 --set threads=1 \
  --set out_dir="$tmp/drops" > "$tmp/dlog" 2>&1; rc=$?
sum=$(sed -n 's/.*"samples_dropped":[[:space:]]*\([0-9]*\).*/\1/p' "$tmp/drops/summary.json" | head -n 1)
dev=$(sed -n 's/.*"total": \([0-9]*\).*/\1/p' "$tmp/drops/scadles-seed1/drops.json" | awk '{s += $1} END {print s + 0}')
last=$(tail -n 1 "$tmp/drops/scadles-seed1/metrics.jsonl" | sed -n 's/.*"dropped": \([0-9]*\).*/\1/p')
if [ $rc != 0 ] || [ -z "$sum" ] || [ "$sum" != "$dev" ] || [ "$sum" -le "${last:-0}" ] || [ "$sum" = 0 ]; then
  echo "FAIL: drop accounting: exit $rc, summary $sum, drops.json $dev, last step $last"; tail -n 5 "$tmp/dlog"; fail=1
fi
[ $fail = 0 ] && echo "run_train_cli: all passed"
exit $fail
