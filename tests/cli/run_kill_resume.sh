#!/bin/sh
# run_kill_resume.sh TRAIN ROOT [POINTS] [SEED] [STEPS]: a checkpointed distributed run (4 devices,
# local backend, virtual clock; ddp then scadles, STEPS steps each (default 36), scadles with the
# paper's compression vote and injection on 2 classes per device; checkpoint_every_steps=3) is
# killed with SIGKILL at POINTS points (default 20, or $SD_KILL_POINTS) drawn from a pseudo-random
# generator seeded with SEED (default 1), and resumed with --resume after each kill (started again
# from scratch when no complete checkpoint exists yet, as a user would); the last resume runs to
# the end. Every invocation must exit 0 or die by our SIGKILL, and the finished run's
# metrics.jsonl, eval.jsonl, eval.dat, buffer.dat and model.safetensors (per run folder),
# config.json (but its out_dir) and summary.json (but its "wall_s" numbers) must be byte-identical
# to an uninterrupted run's.
# Kill points (the delays scale with the uninterrupted run's timing, so a sanitizer build, some 40
# times slower, is killed at the same places): "progress" kills wait until the two runs'
# metrics.jsonl together (a line per step) reach the next of POINTS targets drawn uniformly over
# the run and sorted (and at least one line past the previous kill; the first kill: line 1), then
# 0-2 steps' time more (a checkpoint takes about as long as a step, so these land in steps and in
# checkpoint writes and switches); "time" kills (the 3rd, 8th, 13th, ...) strike at a random
# moment between the start and 2 steps past the startup, mostly while the program starts (loads
# the data, recovers and reads the checkpoint, cuts the outputs back); "end" kills (the last, and
# any once the run is at its last line) wait until the invocation has begun the last run with
# every line written, then up to 3/4 of the time the finish took (model.safetensors,
# summary.json, the report). Each kill is classified by what it left: at startup (its log names no run yet), before
# the first checkpoint (no complete one on disk), in a checkpoint write (a checkpoint.new or
# checkpoint.old of this invocation's), after the last step, restoring (the run began but no step
# of this invocation is in metrics.jsonl yet), or in training. Exits 77 without Fashion-MNIST.
# SD_KILL_KEEP=1 keeps the run folders and every invocation's log (a failure keeps them anyway).
T=$1
ROOT=$2
POINTS=${3:-${SD_KILL_POINTS:-20}}
SEED=${4:-1}
STEPS=${5:-36} # max_steps of each of the two runs
if [ ! -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "run_kill_resume: skipped: Fashion-MNIST not installed (scripts/setup.sh installs dataset-fashion-mnist)"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sd_kill_XXXXXX") || exit 1
[ -n "$SD_KILL_KEEP" ] || trap 'rm -rf "$tmp"' EXIT
cfg="$ROOT/apps/experiments/uniform_s1.json"
sets="--set devices.rates=40,25,12,30 --set modes=ddp,scadles --set max_steps=$STEPS --set eval_limit=200
 --set eval_every_s=3 --set width=0.25 --set threads=1 --set target_accuracy=0.99 --set checkpoint_every_steps=3
 --set compression.policy=paper --set injection.alpha=0.5 --set injection.beta=0.5 --set partition.kind=slices
 --set partition.classes_per_device=2"
RUNS="ddp-seed1 scadles-seed1"
dev="4 devices" # the runner's line as a run begins: "run scadles seed 1: 4 devices, ..."
t_start=$(date +%s)

# the generator: an LCG (glibc's constants) in shell arithmetic; rnd N sets r to 0..N-1
state=$SEED
rnd() {
  state=$(( (state * 1103515245 + 12345) % 2147483648 ))
  r=$(( (state / 65536) % $1 ))
}
# sleep_ms MS
sleep_ms() { sleep "$(($1 / 1000)).$(printf '%03d' $(($1 % 1000)))"; }
# progress DIR: the lines of every run's metrics.jsonl (one per step), summed
progress() {
  p=0
  for run in $RUNS; do
    [ -f "$1/$run/metrics.jsonl" ] && p=$((p + $(wc -l < "$1/$run/metrics.jsonl")))
  done
}
has_run_file() { [ -f "$1/run.safetensors" ]; }
# resume_lines: the lines a resume starts from (the complete checkpoint it will take: checkpoint,
# else checkpoint.new, else checkpoint.old; its run file's metadata names the run and the step),
# 0 when there is none
resume_lines() {
  rl=0
  for d in "$ck" "$ck.new" "$ck.old"; do
    has_run_file "$d" || continue
    h=$(head -c 65536 "$d/run.safetensors" | tr -d '\000')
    k=$(printf '%s' "$h" | grep -a -o '"run_index":"[0-9]*"' | tr -dc 0-9)
    st=$(printf '%s' "$h" | grep -a -o '"step":"[0-9]*"' | tr -dc 0-9)
    rl=$(( ${st:-0} + (${k:-0} > 0 ? run0 : 0) ))
    return
  done
}
# sig: the inode and modification time of checkpoint.new and checkpoint.old (what a kill left
# there that was there before the invocation started does not say that it struck a checkpoint)
sig() { stat -c '%i %y' "$1" 2>/dev/null; }
# struck_checkpoint: this invocation's kill left a checkpoint.new or checkpoint.old of its own
struck_checkpoint() {
  { [ -d "$ck.new" ] && [ "$(sig "$ck.new")" != "$new0" ]; } || { [ -d "$ck.old" ] && [ "$(sig "$ck.old")" != "$old0" ]; }
}

ms() { echo $(($(date +%s%N) / 1000000)); }

# ---- A: uninterrupted, timed (the kill delays scale with it: a build with sanitizers is slower):
# its startup (to the first line), a step, and the finish (from the last line to the exit)
t0=$(ms)
"$T" --config "$cfg" $sets --set out_dir="$tmp/A" > "$tmp/A.log" 2>&1 &
pid=$!
t_first=0 t_line=0 seen=0
while kill -0 $pid 2>/dev/null; do
  progress "$tmp/A"
  if [ $p -gt $seen ]; then
    seen=$p t_line=$(ms)
    [ $t_first = 0 ] && t_first=$t_line
  fi
  sleep 0.01
done
wait $pid; rc=$?
t_end=$(ms)
if [ $rc != 0 ]; then
  echo "FAIL: the uninterrupted run exited $rc:"; tail -n 30 "$tmp/A.log"; exit 1
fi
progress "$tmp/A"; total=$p
run0=$(wc -l < "$tmp/A/ddp-seed1/metrics.jsonl") # the first run's steps
[ $t_first = 0 ] && t_first=$t_end t_line=$t_end
startup_ms=$((t_first - t0)) step_ms=$(( (t_line - t_first) / (total > 1 ? total - 1 : 1) )) finish_ms=$((t_end - t_line))
time_max=$((startup_ms + 2 * step_ms)) step_max=$((2 * step_ms)) end_max=$((finish_ms * 3 / 4))
echo "  uninterrupted run: $total lines; startup $startup_ms ms, $step_ms ms a step (checkpoints included), finish $finish_ms ms"

# ---- B: the same run, killed POINTS times and resumed
# POINTS progress targets drawn uniformly in 1..total-2 lines and sorted, so the kills spread over
# both runs
targets="" i=0
while [ $i -lt "$POINTS" ]; do rnd $((total - 2)); targets="$targets $((1 + r))"; i=$((i + 1)); done
targets="$(printf '%s\n' $targets | sort -n | tr '\n' ' ')"
B="$tmp/B" ck="$tmp/B/checkpoint"
kills=0 inv=0 last=0 fail=0 finished_early=0 recovered_new=0 recovered_old=0 scratch=0
n_startup=0 n_restore=0 n_first=0 n_ckpt=0 n_final=0 n_train=0
while :; do
  inv=$((inv + 1))
  log="$tmp/B.$inv.log"
  if has_run_file "$ck" || has_run_file "$ck.new" || has_run_file "$ck.old"; then
    args="--resume $ck" how="resume"
  else
    args="" how="scratch"; scratch=$((scratch + 1))
  fi
  if [ $kills -ge "$POINTS" ]; then # the last resume runs to the end (a hang is a failure)
    timeout 240 "$T" --config "$cfg" $sets --set out_dir="$B" $args > "$log" 2>&1; rc=$?
    if [ $rc != 0 ]; then
      echo "FAIL: the last invocation ($inv, $how after $kills kills) exited $rc:"; tail -n 30 "$log"; fail=1
    fi
    grep -q "complete one in .*checkpoint\.new," "$log" && recovered_new=$((recovered_new + 1))
    grep -q "complete one in .*checkpoint\.old," "$log" && recovered_old=$((recovered_old + 1))
    break
  fi
  new0=$(sig "$ck.new") old0=$(sig "$ck.old")
  resume_lines; from=$rl
  touch "$tmp/mark"
  "$T" --config "$cfg" $sets --set out_dir="$B" $args > "$log" 2>&1 &
  pid=$!
  # the kill point: the first in the first steps (before the first checkpoint, or in it), every
  # fifth from the third on a time kill, the last at the end, the others at this kill's line of the
  # sorted targets (past the previous kill's line, so that each strikes further on)
  set -- $targets
  shift $kills
  target=$1
  [ $target -le $last ] && target=$((last + 1))
  [ $kills = 0 ] && target=1
  if [ $((kills + 1)) = "$POINTS" ] || [ $target -ge $total ]; then
    rnd $((end_max + 1)); mode="end" target=$total delay=$r
  elif [ $((kills % 5)) = 2 ]; then
    rnd $((time_max + 1)); mode="time" target=0 delay=$r
  else
    rnd $((step_max + 1)); mode="progress" delay=$r
  fi
  # wait for it (a minute at most: a hung invocation is a failure)
  i=0
  while [ $target -gt 0 ] && kill -0 $pid 2>/dev/null; do
    progress "$B"
    [ $p -ge $target ] && { [ $mode != end ] || grep -q "^run scadles seed 1: $dev" "$log" 2>/dev/null; } && break
    i=$((i + 1))
    if [ $i -gt 6000 ]; then echo "FAIL: invocation $inv ($how) made no progress to $target lines in a minute"; fail=1; break; fi
    sleep 0.01
  done
  [ $fail = 1 ] && { kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null; tail -n 30 "$log"; break; }
  sleep_ms $delay
  kill -KILL $pid 2>/dev/null
  wait $pid 2>/dev/null; rc=$?
  grep -q "complete one in .*checkpoint\.new," "$log" && recovered_new=$((recovered_new + 1))
  grep -q "complete one in .*checkpoint\.old," "$log" && recovered_old=$((recovered_old + 1))
  if [ $rc = 0 ]; then # it finished before the kill: resume the finished run and kill again
    finished_early=$((finished_early + 1))
    if [ $finished_early -gt "$POINTS" ]; then echo "FAIL: $finished_early invocations finished before their kill"; fail=1; break; fi
    echo "  invocation $inv ($how, $mode kill): finished before the kill; resuming it again"
    continue
  fi
  if [ $rc != 137 ]; then
    echo "FAIL: invocation $inv ($how, before kill $((kills + 1))) exited $rc on its own:"; tail -n 30 "$log"; fail=1
    break
  fi
  kills=$((kills + 1))
  progress "$B"; last=$p
  if ! grep -q "^run .* seed 1: $dev" "$log"; then phase=startup n_startup=$((n_startup + 1))
  elif ! has_run_file "$ck" && ! has_run_file "$ck.new" && ! has_run_file "$ck.old"; then phase=before-first-checkpoint n_first=$((n_first + 1))
  elif struck_checkpoint; then phase=checkpoint-write n_ckpt=$((n_ckpt + 1))
  elif [ $p -ge $total ] && grep -q "^run scadles seed 1: $dev" "$log"; then phase=after-last-step n_final=$((n_final + 1))
  elif [ -z "$(find "$B" -name metrics.jsonl -newer "$tmp/mark")" ] || [ $p -le $from ]; then
    phase=restoring n_restore=$((n_restore + 1)) # the run began, but no step of this invocation is written
  else phase=training n_train=$((n_train + 1))
  fi
  left=""
  for d in "$ck" "$ck.new" "$ck.old"; do
    [ -d "$d" ] && left="$left ${d##*/}($(ls "$d" | wc -l) files$(has_run_file "$d" && echo ", complete"))"
  done
  echo "  kill $kills: invocation $inv ($how), $mode kill (target $target lines, +$delay ms): from $from to $p/$total lines, $phase;${left:- no checkpoint}"
done

# ---- compare
if [ $fail = 0 ]; then
  for run in $RUNS; do
    for f in metrics.jsonl eval.jsonl eval.dat buffer.dat model.safetensors; do
      if ! cmp "$tmp/A/$run/$f" "$B/$run/$f" > "$tmp/cmp" 2>&1; then
        echo "FAIL: $run/$f differs from the uninterrupted run's: $(cat "$tmp/cmp")"; fail=1
      fi
    done
  done
  for x in A B; do # config.json names its out_dir
    sed 's/"wall_s":[[:space:]]*[0-9.]*/"wall_s": -/g' "$tmp/$x/summary.json" > "$tmp/$x.summary" 2>/dev/null || : > "$tmp/$x.summary"
    grep -v '"out_dir":' "$tmp/$x/config.json" > "$tmp/$x.config" 2>/dev/null || : > "$tmp/$x.config"
  done
  if [ ! -s "$tmp/A.config" ] || ! cmp -s "$tmp/A.config" "$tmp/B.config"; then
    echo "FAIL: config.json differs from the uninterrupted run's (out_dir aside):"; diff "$tmp/A.config" "$tmp/B.config"; fail=1
  fi
  if [ ! -s "$tmp/A.summary" ] || ! cmp -s "$tmp/A.summary" "$tmp/B.summary"; then
    echo "FAIL: summary.json differs from the uninterrupted run's (wall_s aside):"; diff "$tmp/A.summary" "$tmp/B.summary"; fail=1
  fi
fi
echo "run_kill_resume: seed $SEED, $kills kills over $inv invocations ($scratch started from scratch, $finished_early finished before their kill); kills: $n_startup at startup, $n_restore restoring, $n_first before the first checkpoint, $n_train in training, $n_ckpt during a checkpoint write, $n_final after the last step; resumes recovered checkpoint.new $recovered_new times, checkpoint.old $recovered_old times; uninterrupted run $(( (t_end - t0) / 1000 )) s, all $(($(date +%s) - t_start)) s"
for d in "$ck.new" "$ck.old"; do # a later checkpoint would empty them; the last resume wrote none
  [ -d "$d" ] && echo "  note: ${d##*/} ($(ls "$d" | wc -l) files) is left beside the finished run's checkpoint"
done
if [ $fail = 0 ]; then echo "run_kill_resume: passed"; else echo "run_kill_resume: FAILED (files kept in $tmp)"; trap - EXIT; fi
exit $fail
