#!/usr/bin/env bash
# run_edge_cluster.sh ROOT TRAIN PUBLISH HAVE_MPI HAVE_MQTT: the smoke version of the real edge
# cluster (scripts/edge_cluster.sh, docs/distributed.md "A real edge cluster on one machine"): two
# namespaced devices on 10 Mbit/s tbf links, a mosquitto on the bridge, scadles-publish streaming,
# one scadles-train rank per device under mpirun (ddp then scadles, 3 steps each, the publisher
# restarted for the second run) and once over the TCP backend. Checks that both runs trained from
# the broker, that the ranks' gradient bytes went through the devices' qdiscs (tc counters at least
# the ring accounting's bytes: MPI did not take shared memory or loopback), and that everything was
# torn down (no namespace, veth, bridge, mosquitto or temporary folder of the run left). Then the
# failed starts, each of which must name the problem and still tear down: a broker port taken, a
# namespace that exists already (left alone), a trainer that fails, and SIGTERM mid-run.
# Skipped (77) when not root, without ip/tc, mpirun, mosquitto, python3 or Fashion-MNIST, in a build
# without MPI or libmosquitto, or where network namespaces cannot be created (e.g. a container).
root=$1 train=$2 publish=$3 have_mpi=$4 have_mqtt=$5
ec="$root/scripts/edge_cluster.sh"
skip() { echo "test_edge_cluster: skipped: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces, veths, tc)"
for t in ip tc python3; do command -v $t > /dev/null || skip "'$t' not found"; done
command -v mpirun > /dev/null || skip "mpirun not found (openmpi-bin)"
[ -x /usr/sbin/mosquitto ] || command -v mosquitto > /dev/null || skip "mosquitto not found (the mosquitto package)"
case "$have_mpi" in 1 | ON | TRUE | YES) ;; *) skip "this build has no MPI backend (MPI not found at configure time)" ;; esac
case "$have_mqtt" in 1 | ON | TRUE | YES) ;; *) skip "this build has no MQTT source (libmosquitto not found at configure time)" ;; esac
[ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || skip "Fashion-MNIST not installed (scripts/setup.sh)"
probe="etp$$"
ip netns add "$probe" 2> /dev/null || skip "cannot create a network namespace here ($(ip netns add "$probe" 2>&1))"
ip netns del "$probe"

tmp=$(mktemp -d "/tmp/sd_edge_XXXXXX") || exit 1
export TMPDIR=$tmp # edge_cluster.sh's temporary folders go here, so that a leftover is seen
made_ns=""
cleanup() {
    for n in $made_ns; do ip netns del "$n" 2> /dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
t_start=$(date +%s)

# leftovers NAME: what of cluster NAME still exists (nothing, when it was torn down)
leftovers() {
    local l=""
    ip netns list | grep -q "^$1d" && l="$l namespaces:$(ip netns list | grep "^$1d" | cut -d' ' -f1 | tr '\n' ' ')"
    ip -o link show | grep -qE "^[0-9]+: $1[bv][0-9]*[@:]" && l="$l interfaces"
    ls -d "$tmp"/edge_"$1"_* > /dev/null 2>&1 && l="$l temporary-folder"
    pgrep -f "edge_$1_" > /dev/null && l="$l processes:$(pgrep -f "edge_$1_" | tr '\n' ' ')"
    echo "$l"
}
torn_down() { # NAME WHAT
    local l
    l=$(leftovers "$1")
    if [ -z "$l" ]; then ok; else bad "$2: not torn down:$l"; fi
}
# shellcheck disable=SC2054 # (50,38 is one argument)
common=(--set devices.rates=50,38 --set eval_limit=200 --set eval_every_s=2 --set comm_timeout_s=30)

# ---- 1. mpirun across the namespaces: ddp then scadles, 3 steps each ---------------------------------------
n="et$$"
out="$tmp/mpi"
timeout 120 "$ec" train --devices 2 --name "$n" --out "$out" --train "$train" --publish "$publish" -- \
    "${common[@]}" --set modes=ddp,scadles --set max_steps=3 --set time_budget_s=40 > "$tmp/mpi.log" 2>&1
rc=$?
if [ $rc = 3 ]; then
    r=$(grep "cannot host" "$tmp/mpi.log" | head -n 1)
    skip "${r:-edge_cluster.sh cannot host the cluster here}"
fi
[ $rc = 0 ] && ok || { bad "the mpirun run exited $rc:"; tail -n 30 "$tmp/mpi.log"; }
torn_down "$n" "the mpirun run"
# check_run OUT LAUNCHER MODES...: every run 3 steps, trained, from the broker; the qdiscs carried the bytes
check_run() {
    local o=$1
    shift 2
    python3 - "$o" "$@" << 'EOF'
import json, sys
o, modes = sys.argv[1], sys.argv[2:]
problems = []
try:
    s = json.load(open(o + "/summary.json"))
    c = json.load(open(o + "/config.json"))
    l = json.load(open(o + "/edge_links.json"))
except (OSError, ValueError) as e:
    print("missing outputs: %s" % e)
    sys.exit(1)
runs = {r["mode"]: r for r in s["runs"]}
if sorted(runs) != sorted(modes):
    problems.append("runs %s, expected %s" % (sorted(runs), sorted(modes)))
for m, r in runs.items():
    if r["steps"] != 3 or r["samples_trained"] <= 0:
        problems.append("%s: %d steps, %d trained (expected 3 steps and samples)" % (m, r["steps"], r["samples_trained"]))
if "ddp" in runs and runs["ddp"]["samples_trained"] != 3 * 2 * 64:
    problems.append("ddp trained %s samples, expected 3 steps x 2 devices x 64" % runs["ddp"]["samples_trained"])
if (c["clock"], c["stream"]["source"]) != ("real", "mqtt") or c["devices"]["link"]["bandwidth_bps"] != 1e7:
    problems.append("config.json: clock %s, source %s, link %s bit/s" % (c["clock"], c["stream"]["source"],
                                                                         c["devices"]["link"]["bandwidth_bps"]))
ring = sum(r["bytes_sent"] for r in runs.values())
up = [x["up"]["bytes"] for x in l["links"]]
down = [x["down"]["bytes"] for x in l["links"]]
# every byte a rank sent left through its tbf qdisc (payload plus TCP/IP headers plus the MQTT acks)
if ring <= 0 or sum(up) < ring or min(up) < ring / 4 or min(down) < ring / 4:
    problems.append("qdisc bytes up %s, down %s against %d bytes sent by the ranks" % (up, down, ring))
print("; ".join(problems) if problems else "ok: %s trained %s; %d bytes sent, qdiscs up %s down %s"
      % (", ".join(runs), [runs[m]["samples_trained"] for m in sorted(runs)], ring, up, down))
sys.exit(1 if problems else 0)
EOF
}
if [ $rc = 0 ]; then
    if r=$(check_run "$out" mpi ddp scadles); then ok; echo "mpirun: $r"; else bad "mpirun: $r"; fi
    grep -q '"backend":[[:space:]]*"mpi"' "$out/config.json" && ok || bad "config.json does not say backend mpi"
    for k in 1 2; do # a publisher per run, each at the experiment's rates
        if grep -q "device 1 -> trainer-1: .*(target 38.0/s" "$out/edge/publish-run$k.log" 2> /dev/null; then ok
        else bad "run $k's publisher log:"; cat "$out/edge/publish-run$k.log"; fi
    done
fi

# ---- 2. the TCP backend, torchrun-style, in the same kind of cluster ------------------------------------
n="ec$$"
out="$tmp/tcp"
timeout 120 "$ec" train --launcher tcp --devices 2 --name "$n" --out "$out" --train "$train" --publish "$publish" -- \
    "${common[@]}" --set modes=scadles --set max_steps=3 --set time_budget_s=40 > "$tmp/tcp.log" 2>&1
rc=$?
[ $rc = 0 ] && ok || { bad "the TCP run exited $rc:"; tail -n 30 "$tmp/tcp.log"; }
torn_down "$n" "the TCP run"
if [ $rc = 0 ]; then
    if r=$(check_run "$out" tcp scadles); then ok; echo "tcp: $r"; else bad "tcp: $r"; fi
    grep -q '"backend":[[:space:]]*"tcp"' "$out/config.json" && ok || bad "config.json does not say backend tcp"
fi

# ---- 3. failed starts: a clear message, non-zero, and nothing left ---------------------------------------
# a broker port taken (a stand-in mosquitto that finds it so, as the real one says it)
cat > "$tmp/mosquitto" << 'EOF'
#!/bin/sh
echo "1700000000: Error: Address already in use"
exit 1
EOF
chmod 755 "$tmp/mosquitto"
n="ep$$"
EDGE_MOSQUITTO="$tmp/mosquitto" timeout 60 "$ec" run --name "$n" --port 1884 -- true > "$tmp/port.log" 2>&1
rc=$?
[ $rc = 1 ] && grep -q "port 1884 on .* is taken.*pick another --port" "$tmp/port.log" && ok ||
    { bad "port taken: exit $rc:"; cat "$tmp/port.log"; }
torn_down "$n" "port taken"
# no mosquitto at all
n="em$$"
EDGE_MOSQUITTO=/nonexistent/mosquitto timeout 60 "$ec" run --name "$n" -- true > "$tmp/nomosq.log" 2>&1
rc=$?
[ $rc = 3 ] && grep -q "mosquitto.*not found: install the mosquitto package" "$tmp/nomosq.log" && ok ||
    { bad "no mosquitto: exit $rc:"; cat "$tmp/nomosq.log"; }
torn_down "$n" "no mosquitto"
# a subnet this host uses already (loopback's 127.0.0.1): refused before anything is made
n="en$$"
timeout 60 "$ec" run --name "$n" --subnet 127.0.0.0/24 -- true > "$tmp/subnet.log" 2>&1
rc=$?
[ $rc = 1 ] && grep -q "subnet 127.0.0.0/24 is used by this host already" "$tmp/subnet.log" && ok ||
    { bad "subnet in use: exit $rc:"; cat "$tmp/subnet.log"; }
torn_down "$n" "subnet in use"
# a namespace of the same name exists: refused, and it is not touched
n="eu$$"
ip netns add "${n}d1" && made_ns="${n}d1"
timeout 60 "$ec" run --name "$n" -- true > "$tmp/exists.log" 2>&1
rc=$?
[ $rc = 1 ] && grep -q "namespace ${n}d1 exists already" "$tmp/exists.log" && ok || { bad "namespace exists: exit $rc:"; cat "$tmp/exists.log"; }
ip netns list | grep -q "^${n}d1" && ok || bad "the namespace that existed before (${n}d1) was removed"
ip netns del "${n}d1"
made_ns=""
torn_down "$n" "namespace exists"
# the trainer fails (an unknown key): its message, exit 1, torn down
n="ef$$"
timeout 120 "$ec" train --devices 2 --name "$n" --out "$tmp/fail" --train "$train" --publish "$publish" -- \
    "${common[@]}" --set no_such_key=1 > "$tmp/fail.log" 2>&1
rc=$?
[ $rc = 1 ] && grep -q "no_such_key" "$tmp/fail.log" && grep -q "the training job failed" "$tmp/fail.log" && ok ||
    { bad "failing trainer: exit $rc:"; tail -n 20 "$tmp/fail.log"; }
torn_down "$n" "failing trainer"
# SIGTERM mid-run: the ranks stop after a step, then everything goes
n="es$$"
"$ec" train --devices 2 --name "$n" --out "$tmp/sig" --train "$train" --publish "$publish" -- \
    "${common[@]}" --set modes=scadles --set time_budget_s=60 > "$tmp/sig.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do grep -q "^run scadles seed 1" "$tmp/sig.log" && break; sleep 0.1; done
sleep 3
kill -TERM $pid
t0=$(date +%s)
wait $pid
rc=$?
t1=$(date +%s)
[ $rc = 143 ] && grep -q "terminated (SIGTERM): tearing down" "$tmp/sig.log" && [ $((t1 - t0)) -le 20 ] && ok ||
    { bad "SIGTERM: exit $rc after $((t1 - t0)) s:"; tail -n 20 "$tmp/sig.log"; }
torn_down "$n" "SIGTERM"

echo "test_edge_cluster: $pass passed, $fail failed ($(($(date +%s) - t_start)) s)"
[ $fail = 0 ]
