#!/bin/sh
# run_train_tcp.sh TRAIN ROOT: scadles-train started torchrun-style (WORLD_SIZE, RANK, MASTER_ADDR,
# MASTER_PORT) on 127.0.0.1: four processes, one rank each over the TCP backend, must write
# metrics.jsonl and eval.jsonl byte-identical (every per-step field: losses, batches, buffers,
# bytes, modelled times) to the same 4-device experiment on the local backend (threads); so must
# a launch by the real torchrun (python3 -m torch.distributed.run, static rendezvous: scadles
# listens on MASTER_PORT + 1) when PyTorch is installed (else that part is reported and left out).
# Failures: one rank SIGKILLed mid-run (the three others exit non-zero naming rank 2 well within
# comm_timeout_s), WORLD_SIZE different from the device count (every process exits 2 naming both
# numbers), a variable missing, and backend tcp without the variables. Exits 77 without Fashion-MNIST.
T=$1
ROOT=$2
if [ ! -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "run_train_tcp: skipped: Fashion-MNIST not installed (scripts/setup.sh installs dataset-fashion-mnist)"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sd_tcp_XXXXXX") || exit 1
pids=""
cleanup() {
  for p in $pids; do kill -9 "$p" 2>/dev/null; done
  [ -n "$SD_TCP_KEEP" ] || rm -rf "$tmp"
}
trap cleanup EXIT
cfg="$ROOT/apps/experiments/uniform_s1.json"
sets="--set devices.rates=40,25,12,30 --set batch=16 --set modes=ddp,scadles --set eval_limit=200 --set eval_every_s=5
 --set target_accuracy=0.99 --set threads=1 --set comm_timeout_s=20"
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
unset WORLD_SIZE RANK LOCAL_RANK MASTER_ADDR MASTER_PORT SCADLES_MASTER_PORT TORCHELASTIC_USE_AGENT_STORE

# A port nobody listens on now (python3 asks the kernel; else one from the process id).
free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
    2>/dev/null || echo $((20000 + ($$ * 7 + $1) % 30000))
}

# start_ranks N DIR EXTRA...: N processes of rank 0..N-1 in the background, logs DIR.rank<r>.log;
# their pids in $ranks.
start_ranks() {
  n=$1 out=$2
  shift 2
  port=$(free_port "$n")
  ranks=""
  r=0
  while [ $r -lt "$n" ]; do
    WORLD_SIZE=$n RANK=$r LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      "$T" --config "$cfg" $sets --set out_dir="$out" "$@" > "$out.rank$r.log" 2>&1 &
    ranks="$ranks $!"
    r=$((r + 1))
  done
  pids="$pids $ranks"
}

# same_outputs A B WHAT: every run's metrics.jsonl and eval.jsonl byte for byte.
same_outputs() {
  for m in ddp scadles; do
    for f in metrics.jsonl eval.jsonl; do
      if [ -s "$1/$m-seed1/$f" ] && cmp -s "$1/$m-seed1/$f" "$2/$m-seed1/$f"; then ok
      else bad "$3: $m $f differs from the local backend's (or is missing)"; head -n 2 "$1/$m-seed1/$f" "$2/$m-seed1/$f"; fi
    done
  done
  steps=$(wc -l < "$1/ddp-seed1/metrics.jsonl")
  [ "$steps" -eq 6 ] && ok || bad "$3: expected 6 ddp steps, got $steps"
}

# ---- 1. the same experiment on the local backend and over TCP -----------------------------------
t0=$(date +%s)
"$T" --config "$cfg" $sets --set max_steps=6 --set out_dir="$tmp/local" > "$tmp/local.log" 2>&1 ||
  { echo "run_train_tcp: FAILED: the local run failed:"; tail -n 20 "$tmp/local.log"; exit 1; }
t1=$(date +%s)
start_ranks 4 "$tmp/tcp" --set max_steps=6
rcs=""
for p in $ranks; do wait "$p"; rcs="$rcs $?"; done
t2=$(date +%s)
if [ "$rcs" = " 0 0 0 0" ]; then ok; else bad "TCP ranks exited with$rcs"; tail -n 5 "$tmp"/tcp.rank*.log; fi
grep -q "backend tcp: rank 0 of 4, rendezvous at 127.0.0.1:" "$tmp/tcp.rank0.log" && ok || bad "rank 0 did not say backend tcp"
grep -q '"backend":[[:space:]]*"tcp"' "$tmp/tcp/config.json" && ok || bad "config.json does not record backend tcp"
same_outputs "$tmp/local" "$tmp/tcp" "4 ranks over TCP"
echo "local backend: $((t1 - t0)) s; 4 TCP ranks: $((t2 - t1)) s"

# ---- 2. the real torchrun (PyTorch), when installed ---------------------------------------------
if /usr/bin/python3 -c 'import torch.distributed.run' 2>/dev/null; then
  port=$(free_port 9)
  # --redirects/--tee: torch 1.13 under Python 3.11 cannot parse their default "0"
  timeout 120 /usr/bin/python3 -m torch.distributed.run --nproc_per_node=4 --master_addr=127.0.0.1 \
    --master_port="$port" --redirects 2 --tee 2 --log_dir "$tmp/torchrun-logs" --no_python \
    "$T" --config "$cfg" $sets --set max_steps=6 --set out_dir="$tmp/torchrun" > "$tmp/torchrun.log" 2>&1
  rc=$?
  t3=$(date +%s)
  if [ $rc -eq 0 ]; then ok; else bad "torchrun exited $rc"; tail -n 20 "$tmp/torchrun.log"; fi
  grep -q "rendezvous at 127.0.0.1:$((port + 1))" "$tmp/torchrun.log" && ok ||
    bad "under torchrun's static rendezvous scadles should listen on MASTER_PORT + 1 ($((port + 1)))"
  same_outputs "$tmp/local" "$tmp/torchrun" "torchrun --nproc_per_node=4"
  echo "torchrun: $((t3 - t2)) s"
else
  echo "note: PyTorch's torchrun (python3 -m torch.distributed.run) is not installed: the launch by torchrun itself is not checked"
fi

# ---- 3. rank 2 killed mid-run: the others fail naming it, within the timeout -----------------------
start_ranks 4 "$tmp/kill" --set max_steps=100000 --set time_budget_s=1e6
victim=$(echo $ranks | cut -d' ' -f3)
waited=0
while [ "$(cat "$tmp/kill/ddp-seed1/metrics.jsonl" 2>/dev/null | wc -l)" -lt 3 ] && [ $waited -lt 600 ]; do
  sleep 0.1; waited=$((waited + 1))
done
[ $waited -lt 600 ] && ok || bad "the run to kill made no 3 steps in 60 s"
kill -9 "$victim"
tk=$(date +%s)
i=0
for p in $ranks; do
  wait "$p"
  rc=$?
  if [ "$p" = "$victim" ]; then i=$((i + 1)); continue; fi
  log="$tmp/kill.rank$i.log"
  if [ $rc -ne 0 ] && grep -q "rank 2 (127.0.0.1:" "$log"; then ok
  else bad "rank $i after rank 2 was killed: exit $rc, log:"; tail -n 5 "$log"; fi
  i=$((i + 1))
done
te=$(date +%s)
[ $((te - tk)) -lt 15 ] && ok || bad "the survivors took $((te - tk)) s to stop (comm_timeout_s is 20)"
echo "killed rank 2; the others stopped within $((te - tk)) s; rank 1 said:"
grep "scadles-train" "$tmp/kill.rank1.log" | head -n 1

# ---- 4. WORLD_SIZE is not the device count; a variable missing; backend tcp without a launch -------
start_ranks 3 "$tmp/ws" --set max_steps=6
i=0
for p in $ranks; do
  wait "$p"
  rc=$?
  if [ $rc -eq 2 ] && grep -q "devices.count.*is 4 but WORLD_SIZE is 3" "$tmp/ws.rank$i.log"; then ok
  else bad "WORLD_SIZE=3 rank $i: exit $rc:"; cat "$tmp/ws.rank$i.log"; fi
  i=$((i + 1))
done
sed -n 1p "$tmp/ws.rank0.log"
WORLD_SIZE=4 RANK=0 "$T" --config "$cfg" $sets --set max_steps=6 --set out_dir="$tmp/miss" > "$tmp/miss.log" 2>&1
rc=$?
[ $rc -eq 2 ] && grep -q "MASTER_ADDR, MASTER_PORT are not set" "$tmp/miss.log" && ok ||
  { bad "WORLD_SIZE and RANK without MASTER_*: exit $rc"; cat "$tmp/miss.log"; }
"$T" --config "$cfg" $sets --set max_steps=6 --set backend=tcp --set out_dir="$tmp/notcp" > "$tmp/notcp.log" 2>&1
rc=$?
[ $rc -eq 2 ] && grep -q "backend tcp needs a torchrun-style launch" "$tmp/notcp.log" && ok ||
  { bad "backend tcp without the variables: exit $rc"; cat "$tmp/notcp.log"; }

echo "run_train_tcp: $pass passed, $fail failed"
[ $fail -eq 0 ] && [ $pass -gt 0 ]
