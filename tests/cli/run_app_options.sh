#!/bin/sh
# run_app_options.sh APPDIR ROOT: every app's command line (apps/cli/cli.h, one getopt_long parser):
# --version prints "scadles-<app> <base/version.h's version>" and exits 0; --help and -h print the
# usage and exit 0, also after another option and after an unknown one; --opt=value acts as
# --opt value (the same exit status and message, whose value shows it arrived); an unknown option and
# a missing value exit 2 naming the app and the option. Then the shared rules once, on scadles-train:
# no abbreviations, a flag that takes no value refuses one, stray words, --set in order, -X repeated
# in scadles-publish. scadles-bench_gpu only where built (CUDA). Fast: one training step at most.
D=$1
ROOT=$2
fail=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sd_opts_XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
version=$(sed -n 's/^#define SD_VERSION_STRING "\(.*\)"$/\1/p' "$ROOT/base/version.h")
[ -n "$version" ] || { echo "FAIL: no SD_VERSION_STRING in $ROOT/base/version.h"; exit 1; }

run() { # run APP ARGS...: exit status in $rc, stdout in $tmp/out, stderr in $tmp/err
  app=$1; shift
  "$D/scadles-$app" "$@" > "$tmp/out" 2> "$tmp/err"; rc=$?
}
bad() { echo "FAIL: scadles-$app $*"; echo "  stdout:"; sed 's/^/    /' "$tmp/out" | head -n 5
        echo "  stderr:"; sed 's/^/    /' "$tmp/err" | head -n 5; fail=1; }
# want RC STREAM PATTERN APP ARGS...: exit status RC and a line of STREAM (out|err) holding PATTERN
want() {
  w=$1; s=$2; p=$3; shift 3
  run "$@"; shift
  if [ "$rc" != "$w" ] || ! grep -q -F -- "$p" "$tmp/$s"; then bad "$*: exit $rc (want $w, and '$p' on std$s)"; fi
}
# same APP "ARGS WITH --opt=value" "ARGS WITH --opt value": the same exit status, stdout and stderr
same() {
  a=$1; run $a $2; r1=$rc; cp "$tmp/out" "$tmp/out1"; cp "$tmp/err" "$tmp/err1"
  run $a $3
  if [ "$r1" != "$rc" ] || ! cmp -s "$tmp/out1" "$tmp/out" || ! cmp -s "$tmp/err1" "$tmp/err"; then
    bad "$2 (exit $r1) and $3 (exit $rc) differ"
  fi
}

# APP VALUE_OPT VALUE RC PATTERN EQ_ARGS: per app, an option that takes a value (and a valid value for
# it), then --opt=value arguments with the exit status and the stderr text they give
check_app() {
  app=$1 opt=$2 val=$3 erc=$4 epat=$5 eq=$6
  if [ ! -x "$D/scadles-$app" ]; then
    [ "$app" = bench_gpu ] && return 0 # CUDA builds only
    echo "FAIL: $D/scadles-$app is not built"; fail=1; return 0
  fi
  run "$app" --version
  if [ "$rc" != 0 ] || [ "$(cat "$tmp/out")" != "scadles-$app $version" ] || [ -s "$tmp/err" ]; then
    bad "--version: exit $rc (want 0 and exactly 'scadles-$app $version')"
  fi
  want 0 out "usage: scadles-$app" "$app" --help
  want 0 out "usage: scadles-$app" "$app" -h
  want 0 out "--opt=VALUE" "$app" --help
  want 0 out "usage: scadles-$app" "$app" "$opt" "$val" --help
  want 0 out "usage: scadles-$app" "$app" --bogus --help
  want 0 out "scadles-$app $version" "$app" "$opt" "$val" --version
  want 2 err "scadles-$app: unknown option '--bogus' (see --help)" "$app" --bogus
  want 2 err "scadles-$app: unknown option '--bogus'" "$app" --bogus=1
  want 2 err "scadles-$app: $opt needs a value" "$app" "$opt"
  want 2 err "(see --help)" "$app" "$opt"
  # shellcheck disable=SC2086 # eq is a list of words
  want "$erc" err "$epat" "$app" $eq
  same "$app" "$eq" "$(echo "$eq" | sed 's/=/ /')"
}

check_app train --config "$ROOT/apps/experiments/uniform_s1.json" 2 "got '0'" "--stop-at=0"
check_app publish --broker kafka 2 "--device 7: there are only 2 devices" "--device=7 --devices 2 --broker kafka"
check_app bench --models fmnist_cnn 2 "'foo' is unknown" "--models=fmnist_cnn,foo"
check_app bench_brokers --reps 1 2 "reps >= 1" "--reps=0 --no-kafka --no-mqtt"
check_app bench_comm --reduce both 2 "--min is above --max" "--min=8K --max 4K"
check_app bench_load --seconds 1 2 "--seconds: bad value 'x'" "--seconds=x"
check_app bench_stream --images 1000 2 "--images needs a number, got 'x'" "--images=x"
check_app bench_topk --sizes 1M 2 "'0' is not a list of sizes" "--sizes=0"
check_app bench_gpu --reps 3 2 "--reps needs a whole number in [1, 1000000], got '0'" "--reps=0"

# --opt=value where it runs: scadles-bench_brokers with nothing to measure, a tiny scadles-bench_comm
run bench_brokers --reps=1 --no-kafka --no-mqtt
[ "$rc" = 0 ] || bad "--reps=1 --no-kafka --no-mqtt: exit $rc (want 0)"
want 0 out "4096" bench_comm --threads=2 --min=4K --max=4K --time=0.01 --warmup=0 --ops=allreduce
grep -q "2 ranks" "$tmp/out" || bad "--threads=2: not 2 ranks"

# the parser's rules, once (they are shared): no abbreviations, no value for a flag that takes none,
# no stray words, nothing after "--", a value that looks like an option is still the value, except
# --help, -h and --version, which win wherever they stand before "--"
want 2 err "unknown option '--ep' (did you mean --epochs?" train --ep 3
want 2 err "--quiet takes no value (got '--quiet=1'" train --quiet=1
want 2 err "unexpected argument 'foo'" train --lr 0.1 foo
want 2 err "unexpected argument 'x'" train -- x
want 2 err "unknown option '-z'" train -z
want 2 err 'got a string ("--quiet")' train --lr --quiet
want 0 out "usage: scadles-train" train --lr --help
want 0 out "scadles-train $version" train --set --version
want 2 err "unexpected argument '--help'" train -- --help
want 2 err "--config needs a value: an experiment file" train --config
want 2 err "--config $ROOT/apps is a directory" train --config="$ROOT/apps"
want 2 err "--resume needs a value" train --resume
# scadles-train: --config admits only --set, --resume, --stop-at; --set applies in order (the first
# bad one is named); --set without --config; --report alone
want 2 err "with --config only --set key=value" train --config "$ROOT/apps/experiments/uniform_s1.json" --lr=0.1
want 2 err '("first")' train --config="$ROOT/apps/experiments/uniform_s1.json" --set max_steps=first --set=max_steps=second
want 2 err '("second")' train --config="$ROOT/apps/experiments/uniform_s1.json" --set=max_steps=3 --set=max_steps=second
want 2 err "--set needs --config" train --set=batch=4
want 2 err "usage: scadles-train --report DIR" train --report="$tmp" --lr 0.1
want 1 err "$tmp/none" train --report="$tmp/none"
# scadles-publish: -X repeats (64 kept, as -X K=V or -XK=V, the 65th refused)
xs=""
i=0
while [ $i -lt 64 ]; do xs="$xs -Xk$i=v"; i=$((i + 1)); done
# shellcheck disable=SC2086
want 2 err "are Kafka options" publish --broker=mqtt $xs
# shellcheck disable=SC2086
want 2 err "too many -X settings (64 at most)" publish --broker=kafka $xs -X k64=v
want 2 err "-X =v: needs KEY=VALUE" publish --broker=kafka -X a=b -X=v

# one training step with --opt=value throughout (needs Fashion-MNIST; the rest above does not)
if [ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  want 0 out "(1 steps; outputs in $tmp/t)" train --train-limit=128 --eval-limit=64 --batch=64 --steps=1 \
    --threads=1 --quiet --out="$tmp/t" --lr=0.05
  grep -q '"lr":[[:space:]]*0.05,' "$tmp/t/config.json" || bad "--lr=0.05 is not in $tmp/t/config.json"
else
  echo "run_app_options: Fashion-MNIST not installed: the training step is skipped"
fi
[ $fail = 0 ] && echo "run_app_options: all passed"
exit $fail
