#!/usr/bin/env bash
# edge_run.sh: the paper's experiment for real (docs/distributed.md, "A real edge cluster on one
# machine"): Uniform S1 (apps/experiments/uniform_s1.json: the Fashion-MNIST CNN, IID) on N namespaced
# devices of scripts/edge_cluster.sh, each link shaped to --mbit each way, one scadles-train process
# per device under mpirun (or --launcher tcp), every device streaming its partition from mosquitto
# at its Uniform S1 rate, under the wall clock: ddp, then scadles, same seed, same links. Writes the
# usual outputs to OUT (summary.json, accuracy.png, report.html, <mode>-seed<k>/metrics.jsonl and
# eval.jsonl), the link counters (edge_links.json) and OUT/edge_run.txt: the command, the machine,
# the comparison table (time to target in wall seconds, speedup, samples trained and dropped, peak
# buffer, bytes) and the bytes through the qdiscs. Then the same experiment is replayed under the
# virtual clock (OUT/virtual: backend local, the replay stream, the links as shaped with the token
# bucket modelled, each device's compute from --profile) and scripts/compare_clocks.py puts the two
# side by side (OUT/clocks.md, OUT/clocks.json; docs/distributed.md, "How far the virtual clock can
# be trusted"). Needs root (sudo) and what edge_cluster.sh needs.
#
#   sudo scripts/edge_run.sh [--devices 8] [--rates R0,R1,..] [--mbit 10] [--delay 1ms|none]
#                            [--seconds 700] [--seeds 1] [--eval-limit 2000] [--eval-every 10]
#                            [--launcher mpi|tcp] [--out DIR] [-- TRAIN_ARGS...]
#
#   --devices N   devices (default 8, Uniform S1's count; another count needs --rates with N rates)
#   --rates LIST  per-device samples/s instead of the experiment's uniform_s1 preset
#   --mbit M      every link's rate each way, Mbit/s (default 10)
#   --delay D     netem delay on what each device sends (default 1ms; none: no delay; a kernel without
#                 sch_netem shapes the rate only, and says so)
#   --seconds S   each mode's wall-clock budget, seconds (default 700); a run ends earlier at the
#                 target accuracy. The wall time is about the two runs' times plus 10-20 s of start-up.
#   --seeds LIST  seeds (default 1); every seed runs both modes
#   --eval-limit N  test images per evaluation (default 2000; 0: all 10,000)
#   --eval-every S  seconds between evaluations (default 10). Rank 0 evaluates on the wall clock while
#                 the streams go on and the other ranks wait: the full test set took 1.75 s a time
#                 (4.5 s at most) in the 4-device trial, so every 5 s would cost scadles a third of
#                 its steps; 2,000 images every 10 s cost a few per cent
#   --out DIR     (default runs/edge_uniform_s1)
#   --profile F   the device profile the virtual replay charges (scadles-bench --profile; default
#                 apps/experiments/profiles/cpu_t1_c8.json, 8 CNN copies at once on 1 thread each);
#                 none: no replay
#   after --, more scadles-train arguments (e.g. --set eval_limit=2000)
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "edge_run: $*" >&2; }
devices=8 rates="" mbit=10 delay=1ms seconds=700 seeds=1 eval_limit=2000 eval_every=10 launcher=mpi out="$here/runs/edge_uniform_s1"
profile="$here/apps/experiments/profiles/cpu_t1_c8.json"
rest=()
need() { if [ $# -lt 2 ] || [ -z "$2" ]; then say "$1 needs a value"; exit 2; fi; }
while [ $# -gt 0 ]; do
    case "$1" in
    --devices) need "$@"; devices=$2; shift 2 ;;
    --rates) need "$@"; rates=$2; shift 2 ;;
    --mbit) need "$@"; mbit=$2; shift 2 ;;
    --delay) need "$@"; delay=$2; shift 2 ;;
    --seconds) need "$@"; seconds=$2; shift 2 ;;
    --seeds) need "$@"; seeds=$2; shift 2 ;;
    --eval-limit) need "$@"; eval_limit=$2; shift 2 ;;
    --eval-every) need "$@"; eval_every=$2; shift 2 ;;
    --launcher) need "$@"; launcher=$2; shift 2 ;;
    --out) need "$@"; out=$2; shift 2 ;;
    --profile) need "$@"; profile=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    --) shift; rest=("$@"); break ;;
    *) say "unknown option '$1' (see --help)"; exit 2 ;;
    esac
done
[[ $mbit =~ ^[0-9]+(\.[0-9]+)?$ ]] || { say "--mbit $mbit: a number of Mbit/s"; exit 2; }
[[ $seconds =~ ^[0-9]+(\.[0-9]+)?$ ]] || { say "--seconds $seconds: a number of seconds"; exit 2; }
[[ $seeds =~ ^[0-9]+(,[0-9]+)*$ ]] || { say "--seeds $seeds: a list of seeds, e.g. 1,2,3"; exit 2; }
[[ $eval_limit =~ ^[0-9]+$ ]] || { say "--eval-limit $eval_limit: a number of images (0: all)"; exit 2; }
[[ $eval_every =~ ^[0-9]+(\.[0-9]+)?$ ]] || { say "--eval-every $eval_every: a number of seconds"; exit 2; }
# shellcheck disable=SC2054 # (ddp,scadles is one argument)
sets=(--set modes=ddp,scadles --set "seeds=$seeds" --set "time_budget_s=$seconds" --set "eval_limit=$eval_limit"
    --set "eval_every_s=$eval_every")
if [ -n "$rates" ]; then
    n=$(awk -F, '{ print NF }' <<< "$rates")
    [ "$n" = "$devices" ] || { say "--rates $rates has $n rates for --devices $devices"; exit 2; }
    sets+=(--set "devices.rates=$rates")
elif [ "$devices" != 8 ]; then
    say "Uniform S1 has 8 devices: with --devices $devices give their rates, --rates R0,..,R$((devices - 1))"
    exit 2
fi
cluster=(--devices "$devices" --rate "${mbit}mbit" --launcher "$launcher" --out "$out")
[ "$delay" = none ] || cluster+=(--delay "$delay")

mkdir -p "$out" || exit 1
load0=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s.%N)
start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
"$here/scripts/edge_cluster.sh" train "${cluster[@]}" -- "${sets[@]}" "${rest[@]}"
rc=$?
t1=$(date +%s.%N)
[ $rc = 0 ] || { say "the run failed (exit $rc)"; exit $rc; }

# ---- the record: command, machine, table, bytes ----------------------------------------------------------
{
    echo "edge_run.sh: Uniform S1 on a real edge cluster, started $start"
    echo "command: scripts/edge_run.sh --devices $devices ${rates:+--rates $rates }--mbit $mbit --delay $delay --seconds $seconds --seeds $seeds --eval-limit $eval_limit --eval-every $eval_every --launcher $launcher --out $out ${rest[*]:+-- ${rest[*]}}"
    echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), kernel $(uname -r), load average before $load0, after $(cut -d' ' -f1-3 /proc/loadavg)"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "wall time of the whole benchmark: %.1f s\n", b - a }'
    sed -n '/^mode  *seed  *t_target/,/^(target/p' "$out/edge/train.log" | sed 's/times in clock seconds/times in wall-clock seconds since each run began/'
    python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
s = json.load(open(out + "/summary.json"))
l = json.load(open(out + "/edge_links.json"))
for r in s["runs"]:
    print("%s seed %d: %d steps in %.1f s of wall time, %d bytes sent by the ranks (ring accounting)"
          % (r["mode"], r["seed"], r.get("steps", 0), r.get("wall_s", 0), r.get("bytes_sent", 0)))
up = sum(x["up"]["bytes"] for x in l["links"])
down = sum(x["down"]["bytes"] for x in l["links"])
drops = sum(x["up"]["dropped"] + x["down"]["dropped"] for x in l["links"])
print("links (%s each way, tbf burst %s, delay %s): %d bytes up and %d bytes down through the qdiscs in all "
      "(MPI, the MQTT streams and their acknowledgements), %d packets dropped by the buckets"
      % (l["rate"], l["burst"], (l["delay"] + " (netem)") if l["netem"] else "none", up, down, drops))
EOF
} > "$out/edge_run.txt"
cat "$out/edge_run.txt"

# ---- the virtual clock replays the same experiment ------------------------------------------------------
if [ "$profile" != none ]; then
    [ -r "$profile" ] || { say "--profile $profile: not readable (scadles-bench --profile writes one; none: no replay)"; exit 1; }
    # the resolved config of the real run, with every device's compute taken from the profile
    python3 - "$out/config.json" "$profile" "$out/virtual.json" <<'EOF' || { say "cannot write the replay's config"; exit 1; }
import json, sys
c = json.load(open(sys.argv[1]))
for d in c["devices"].get("list", []):
    for k in ("samples_per_s", "step_overhead_s", "profile"):
        d.pop(k, None)
c["devices"]["compute"] = {"profile": sys.argv[2], "slowdown": 1}
c["out_dir"] = ""
json.dump(c, open(sys.argv[3], "w"), indent=1)
EOF
    rm -rf "$out/virtual"
    "$here/build/apps/scadles-train" --config "$out/virtual.json" --set clock=virtual --set backend=local \
        --set stream.source=replay --set link_emulation=token_bucket --set out_dir="$out/virtual" > "$out/virtual.log" 2>&1 ||
        { say "the virtual replay failed: see $out/virtual.log"; tail -n 5 "$out/virtual.log" >&2; exit 1; }
    {
        echo "virtual clock replay ($out/virtual: profile $profile, token bucket of the links' burst) against the real run:"
        python3 "$here/scripts/compare_clocks.py" "$out" "$out/virtual" --json "$out/clocks.json"
    } > "$out/clocks.md"
    cat "$out/clocks.md"
fi
say "outputs: $out/{edge_run.txt,summary.json,accuracy.png,report.html,edge_links.json}"
