#!/usr/bin/env bash
# edge_cluster.sh: a real edge cluster on one Linux host (docs/distributed.md, "A real edge cluster on
# one machine"): N network namespaces, one per device, joined by veth pairs to a bridge of their own
# on a /24 of their own, every device's link shaped with tc (tbf: what the device sends, and what it
# receives, on the bridge side of its veth; a netem delay on what it sends where the kernel has
# sch_netem), and a mosquitto broker bound on the bridge address. Everything it created, and only
# that, is removed when it ends, fails or is signalled. Needs root, iproute2 (ip, tc) and mosquitto;
# `train` also mpirun (Open MPI) or nothing more (--launcher tcp), and python3.
#
#   edge_cluster.sh run   [cluster options] -- CMD [ARGS...]
#       the cluster up, CMD in the root namespace with EDGE_* describing it (below), then down;
#       exits with CMD's status.
#   edge_cluster.sh train [cluster options] [train options] [-- SCADLES_TRAIN_ARGS...]
#       one scadles-train rank per device (mpirun across the namespaces, Open MPI's TCP transport
#       over the shaped veths; or --launcher tcp: the torchrun-style TCP backend), each rank reading
#       its topic from the broker under the real clock, and scadles-publish streaming each device's
#       partition at the experiment's rates for each run (restarted when a run starts, once every
#       device has subscribed: MQTT keeps no history). Writes OUT/edge_links.json (the qdisc counters
#       of every link) and OUT/edge/ (the broker's, publisher's and ranks' logs).
#   edge_cluster.sh check [cluster options]
#       5 MB over TCP from device 0 to device 1, the throughput and both qdiscs' counters.
#
# cluster options:
#   --devices N      devices (namespaces), 1..64 (default 2; check needs 2 or more)
#   --rate RATE      tc rate of every link, each way (default 10mbit)
#   --burst SIZE     tbf bucket depth (default 64kb)      --queue LAT  tbf queue as a latency (default 50ms)
#   --delay D        netem delay on what each device sends, e.g. 1ms (default none; needs sch_netem)
#   --name NAME      names start with NAME: namespaces NAMEd<k>, veths NAMEv<k>, bridge NAMEb
#                    (1-10 lower-case letters and digits, a letter first; default sd<pid>)
#   --subnet A.B.C.0/24   the cluster's subnet: devices A.B.C.1.., bridge and broker A.B.C.254
#                    (default: a 10.x.y.0/24 that no interface or route of this host uses)
#   --port P         the broker's port (default: a free one)      --no-broker
#   --keep           keep the temporary folder (configs, logs) and print where it is
# train options:
#   --launcher mpi|tcp   (default mpi)       --mpirun PATH (default mpirun)
#   --config FILE    experiment (default apps/experiments/uniform_s1.json)
#   --out DIR        out_dir (default runs/edge)
#   --train PATH --publish PATH   (default build/apps/scadles-train, build/apps/scadles-publish)
#   after --, scadles-train arguments, e.g. --set modes=scadles --set time_budget_s=60 (the script sets
#   clock=real, stream.source=mqtt, the broker, out_dir and threads=1 first, so these may override)
#
# CMD (run) sees: EDGE_NAME EDGE_DEVICES EDGE_NS (namespace names, space-separated, device order)
# EDGE_ADDRS EDGE_SUBNET EDGE_BRIDGE EDGE_BRIDGE_ADDR EDGE_BROKER_HOST EDGE_BROKER_PORT EDGE_BROKER_LOG
# EDGE_DIR (a temporary folder, removed at the end) EDGE_RATE EDGE_BURST EDGE_DELAY (empty: none)
# EDGE_NETEM (1 when the delay is applied) EDGE_VETHS (bridge-side veth names).
# Exit status: CMD's (run), 0 done, 1 a failure (named), 2 a bad command line, 3 this machine cannot
# host the cluster (not root, no ip/tc/mosquitto/mpirun/python3, namespaces cannot be created).
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
me="edge_cluster"
say() { echo "$me: $*" >&2; }
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }
bad_usage() { say "$*"; say "see $0 --help"; exit 2; }
cannot() { say "cannot host the cluster: $*"; exit 3; }
fail() { say "$*"; exit 1; }

# ---- options -------------------------------------------------------------------------------------
cmd=${1:-}
case "$cmd" in
run | train | check) shift ;;
-h | --help | help | "") usage ;;
*) bad_usage "unknown subcommand '$cmd' (run, train or check)" ;;
esac
devices=2 rate=10mbit burst=64kb queue=50ms delay="" name="sd$$" subnet="" port="" broker=1 keep=0
launcher=mpi mpirun=mpirun config="$here/apps/experiments/uniform_s1.json" out="$here/runs/edge"
train="$here/build/apps/scadles-train" publish="$here/build/apps/scadles-publish"
rest=()
need() { [ $# -ge 2 ] && [ -n "$2" ] || bad_usage "$1 needs a value"; }
while [ $# -gt 0 ]; do
    case "$1" in
    --devices) need "$@"; devices=$2; shift 2 ;;
    --rate) need "$@"; rate=$2; shift 2 ;;
    --burst) need "$@"; burst=$2; shift 2 ;;
    --queue) need "$@"; queue=$2; shift 2 ;;
    --delay) need "$@"; delay=$2; shift 2 ;;
    --name) need "$@"; name=$2; shift 2 ;;
    --subnet) need "$@"; subnet=$2; shift 2 ;;
    --port) need "$@"; port=$2; shift 2 ;;
    --no-broker) broker=0; shift ;;
    --keep) keep=1; shift ;;
    --launcher) need "$@"; launcher=$2; shift 2 ;;
    --mpirun) need "$@"; mpirun=$2; shift 2 ;;
    --config) need "$@"; config=$2; shift 2 ;;
    --out) need "$@"; out=$2; shift 2 ;;
    --train) need "$@"; train=$2; shift 2 ;;
    --publish) need "$@"; publish=$2; shift 2 ;;
    -h | --help) usage ;;
    --) shift; rest=("$@"); break ;;
    *) bad_usage "unknown option '$1'" ;;
    esac
done
[[ $devices =~ ^[0-9]+$ ]] && [ "$devices" -ge 1 ] && [ "$devices" -le 64 ] ||
    bad_usage "--devices $devices: must be 1..64"
[[ $name =~ ^[a-z][a-z0-9]{0,9}$ ]] ||
    bad_usage "--name $name: 1-10 lower-case letters and digits, a letter first (interface names are short)"
for v in "$rate" "$burst" "$queue" ${delay:+"$delay"}; do
    [[ $v =~ ^[0-9]+(\.[0-9]+)?[a-zA-Z]*$ ]] || bad_usage "'$v' is not a tc quantity (e.g. 10mbit, 64kb, 50ms, 1ms)"
done
if [ -n "$port" ]; then
    [[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || bad_usage "--port $port: must be 1..65535"
fi
case "$launcher" in mpi | tcp) ;; *) bad_usage "--launcher $launcher: mpi or tcp" ;; esac
case "$cmd" in
run) [ ${#rest[@]} -gt 0 ] || bad_usage "run needs a command after --" ;;
check) [ "$devices" -ge 2 ] || bad_usage "check needs --devices 2 or more" ;;
train) [ "$broker" = 1 ] || bad_usage "train needs the broker (leave out --no-broker)" ;;
esac

# ---- what this machine must have ---------------------------------------------------------------------
[ "$(id -u)" = 0 ] || cannot "needs root (network namespaces, veths, tc); run it with sudo"
for t in ip tc; do command -v "$t" > /dev/null || cannot "'$t' not found: install iproute2"; done
mosquitto=${EDGE_MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
if [ "$broker" = 1 ] && [ ! -x "$mosquitto" ]; then
    cannot "the mosquitto broker ($mosquitto) not found: install the mosquitto package (scripts/setup.sh tests), or pass --no-broker"
fi
if [ "$cmd" != run ]; then command -v python3 > /dev/null || cannot "python3 not found (it reads the run's config.json)"; fi
if [ "$cmd" = train ]; then
    [ -x "$train" ] || fail "$train not found: build it (cmake --build build --target scadles-train) or pass --train"
    [ -x "$publish" ] || fail "$publish not found: build it (cmake --build build --target scadles-publish) or pass --publish"
    [ -r "$config" ] || fail "--config $config: no such readable file"
    if [ "$launcher" = mpi ]; then
        command -v "$mpirun" > /dev/null || cannot "'$mpirun' not found: install Open MPI (openmpi-bin), or use --launcher tcp"
        "$mpirun" --version 2>&1 | grep -i "open mpi\|open-mpi\|openrte" > /dev/null ||
            fail "'$mpirun' is not Open MPI's ('$mpirun --version' does not say so): the launch uses Open MPI's options; use --launcher tcp"
    fi
fi

# ---- what this invocation created, and how it goes away -----------------------------------------------
made_ns=() made_veth=() made_bridge="" dir="" broker_pid="" job_pids=() pub_manager="" tailer="" done_down=0
ns_of() { echo "${name}d$1"; }
stop_pid() { # PID [SIGNAL]: signal it, wait up to 5 s for it to go, then SIGKILL
    local p=$1 sig=${2:-TERM} i
    kill -0 "$p" 2> /dev/null || return 0
    kill -"$sig" "$p" 2> /dev/null
    for ((i = 0; i < 50; i++)); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
    kill -0 "$p" 2> /dev/null && kill -KILL "$p" 2> /dev/null
    wait "$p" 2> /dev/null
    return 0
}
teardown() {
    [ "$done_down" = 1 ] && return
    done_down=1
    trap '' INT TERM HUP
    [ -n "$pub_manager" ] && stop_pid "$pub_manager"
    [ -n "$dir" ] && [ -s "$dir/publisher.pid" ] && stop_pid "$(cat "$dir/publisher.pid")" INT
    for p in "${job_pids[@]}"; do stop_pid "$p"; done
    [ -n "$tailer" ] && stop_pid "$tailer"
    local ns p left
    for ns in "${made_ns[@]}"; do # whatever still runs inside our namespaces was started by us
        for p in $(ip netns pids "$ns" 2> /dev/null); do kill -TERM "$p" 2> /dev/null; done
    done
    for ns in "${made_ns[@]}"; do
        for p in $(ip netns pids "$ns" 2> /dev/null); do stop_pid "$p"; done
    done
    [ -n "$broker_pid" ] && stop_pid "$broker_pid"
    for v in "${made_veth[@]}"; do ip link del "$v" 2> /dev/null; done
    for ns in "${made_ns[@]}"; do ip netns del "$ns" 2> /dev/null; done
    [ -n "$made_bridge" ] && ip link del "$made_bridge" 2> /dev/null
    left=""
    for ns in "${made_ns[@]}"; do ip netns list | grep -w "^$ns" > /dev/null && left="$left namespace $ns"; done
    for v in "${made_veth[@]}" $made_bridge; do ip link show "$v" > /dev/null 2>&1 && left="$left link $v"; done
    [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2> /dev/null && left="$left mosquitto($broker_pid)"
    [ -n "$left" ] && say "WARNING: could not remove:$left"
    if [ -n "$dir" ]; then
        if [ "$keep" = 1 ]; then say "kept $dir"; else rm -rf "$dir"; fi
    fi
}
trap teardown EXIT
trap 'say "interrupted (SIGINT): tearing down"; exit 130' INT
trap 'say "terminated (SIGTERM): tearing down"; exit 143' TERM
trap 'say "hung up (SIGHUP): tearing down"; exit 129' HUP

# ---- the cluster -------------------------------------------------------------------------------------
# Refuse names that exist already: they are not ours, so nothing of them is touched.
bridge="${name}b"
for ((k = 0; k < devices; k++)); do
    ns=$(ns_of $k)
    ip netns list | grep -w "^$ns" > /dev/null && fail "namespace $ns exists already (another run, or left over): pick another --name, or remove it (ip netns del $ns) if it is a leftover"
    ip link show "${name}v$k" > /dev/null 2>&1 && fail "interface ${name}v$k exists already: pick another --name"
done
ip link show "$bridge" > /dev/null 2>&1 && fail "interface $bridge exists already: pick another --name"

# (no grep -q after a pipe here: under pipefail the writer's SIGPIPE would turn a match into a failure)
in_use() { # PREFIX (A.B.C.): does an address or route of this host use this /24?
    { ip -o -4 addr show; ip -4 route show; } | grep "\b${1//./\\.}[0-9]" > /dev/null
}
if [ -n "$subnet" ]; then
    [[ $subnet =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.0/24$ ]] || bad_usage "--subnet $subnet: must be A.B.C.0/24"
    for o in "${BASH_REMATCH[@]:1}"; do [ "$o" -le 255 ] || bad_usage "--subnet $subnet: octet $o > 255"; done
    base="${subnet%0/24}"
    in_use "$base" && fail "--subnet $subnet is used by this host already (ip -4 addr / ip -4 route): pick another"
else
    for ((i = 0; i < 256; i++)); do
        s=$((($$ + i) % 65536))
        base="10.$((200 + s % 50)).$((s / 50 % 256))."
        in_use "$base" || break
        base=""
    done
    [ -n "$base" ] || fail "found no free 10.x.y.0/24 for the cluster: pass --subnet"
    subnet="${base}0/24"
fi
baddr="${base}254"

dir=$(mktemp -d "${TMPDIR:-/tmp}/edge_${name}_XXXXXX") || fail "cannot make a temporary folder"
chmod 755 "$dir"

ip link add "$bridge" type bridge 2> "$dir/err" || {
    grep -qi "not supported\|operation not permitted\|unknown" "$dir/err" &&
        cannot "cannot create a bridge here ($(cat "$dir/err")): a container without NET_ADMIN, or no bridge support"
    fail "ip link add $bridge type bridge: $(cat "$dir/err")"
}
made_bridge=$bridge
ip addr add "$baddr/24" dev "$bridge" && ip link set "$bridge" up || fail "cannot configure bridge $bridge ($baddr/24)"

netem=0
[ -n "$delay" ] && netem=1
shape_up() { # NS: what the device sends (its eth0), optionally delayed
    if [ "$netem" = 1 ]; then
        ip netns exec "$1" tc qdisc add dev eth0 root handle 1: netem delay "$delay" 2> "$dir/err" &&
            ip netns exec "$1" tc qdisc add dev eth0 parent 1:1 handle 10: tbf rate "$rate" burst "$burst" latency "$queue" &&
            return 0
        if grep -qi "unknown" "$dir/err"; then
            say "no sch_netem in this kernel: shaping the rate only (no added delay)"
            netem=0
        else
            return 1
        fi
    fi
    ip netns exec "$1" tc qdisc add dev eth0 root tbf rate "$rate" burst "$burst" latency "$queue"
}
addrs=() nss=()
for ((k = 0; k < devices; k++)); do
    ns=$(ns_of $k) veth="${name}v$k" addr="$base$((k + 1))"
    ip netns add "$ns" 2> "$dir/err" || {
        grep -qi "permission\|not permitted\|read-only\|not supported" "$dir/err" &&
            cannot "cannot create network namespaces here ($(cat "$dir/err")): a container without CAP_SYS_ADMIN?"
        fail "ip netns add $ns: $(cat "$dir/err")"
    }
    made_ns+=("$ns")
    ip link add "$veth" type veth peer name eth0 netns "$ns" || fail "cannot create the veth pair $veth <-> $ns:eth0"
    made_veth+=("$veth")
    ip link set "$veth" master "$bridge" up &&
        ip -n "$ns" addr add "$addr/24" dev eth0 &&
        ip -n "$ns" link set eth0 up &&
        ip -n "$ns" link set lo up || fail "cannot configure $ns (eth0 $addr/24 on $bridge)"
    shape_up "$ns" || fail "tc on $ns:eth0 refused the shaping (rate $rate burst $burst latency $queue): $(cat "$dir/err" 2> /dev/null)"
    # what the device receives leaves the bridge through its veth: the same bucket there
    tc qdisc add dev "$veth" root tbf rate "$rate" burst "$burst" latency "$queue" ||
        fail "tc on $veth refused the shaping (rate $rate burst $burst latency $queue)"
    addrs+=("$addr") nss+=("$ns")
done
[ "$netem" = 1 ] && applied="$delay one-way on what each device sends (netem)" || applied="none"
say "$devices device(s) ${nss[0]}..${nss[$((devices - 1))]} at ${addrs[0]}..${addrs[$((devices - 1))]} on bridge $bridge ($baddr, $subnet); every link shaped to $rate each way (tbf burst $burst, queue $queue), delay $applied"

# ---- the broker ----------------------------------------------------------------------------------------
port_open() { (exec 3<> "/dev/tcp/$1/$2") 2> /dev/null; }
free_port() {
    python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$baddr" 2> /dev/null ||
        echo $((30000 + ($$ * 7919 + RANDOM) % 30000))
}
blog="$dir/broker.log"
if [ "$broker" = 1 ]; then
    chosen=$port
    for _ in 1 2 3; do
        [ -n "$chosen" ] && p=$chosen || p=$(free_port)
        cat > "$dir/mosquitto.conf" <<EOF
# edge_cluster.sh's broker for cluster $name: the bridge address only, no history
listener $p $baddr
allow_anonymous true
persistence false
max_queued_messages 100000
log_dest stderr
log_type error
log_type warning
log_type notice
log_type subscribe
connection_messages true
EOF
        chmod 644 "$dir/mosquitto.conf"
        : > "$blog"
        "$mosquitto" -c "$dir/mosquitto.conf" >> "$blog" 2>&1 &
        broker_pid=$!
        up=0
        for ((i = 0; i < 100; i++)); do
            kill -0 "$broker_pid" 2> /dev/null || break
            port_open "$baddr" "$p" && { up=1; break; }
            sleep 0.05
        done
        [ "$up" = 1 ] && break
        stop_pid "$broker_pid"
        broker_pid=""
        if grep -qi "address already in use" "$blog"; then
            [ -n "$chosen" ] && fail "the broker's port $p on $baddr is taken (mosquitto: $(grep -i 'already in use' "$blog" | head -n 1)): pick another --port, or leave it out for a free one"
            continue # a free port taken in between: another one
        fi
        fail "mosquitto did not start on $baddr:$p; its log ($blog):
$(tail -n 20 "$blog")"
    done
    [ -n "$broker_pid" ] || fail "mosquitto found no free port on $baddr in 3 attempts: pass --port"
    port=$p
    say "broker: mosquitto (pid $broker_pid) on $baddr:$port, log $blog"
fi

export EDGE_NAME=$name EDGE_DEVICES=$devices EDGE_NS="${nss[*]}" EDGE_ADDRS="${addrs[*]}" EDGE_SUBNET=$subnet
export EDGE_BRIDGE=$bridge EDGE_BRIDGE_ADDR=$baddr EDGE_BROKER_HOST=$baddr EDGE_BROKER_PORT=$port EDGE_BROKER_LOG=$blog
export EDGE_DIR=$dir EDGE_RATE=$rate EDGE_BURST=$burst EDGE_DELAY=$delay EDGE_NETEM=$netem EDGE_VETHS="${made_veth[*]}"

# ---- link counters -------------------------------------------------------------------------------------
# tbf_counts DEV [NS]: "bytes packets dropped overlimits" of the tbf qdisc on DEV
tbf_counts() {
    local out
    if [ -n "${2:-}" ]; then out=$(ip netns exec "$2" tc -s qdisc show dev "$1"); else out=$(tc -s qdisc show dev "$1"); fi
    awk '/^qdisc tbf/ { t = 1; next } /^qdisc/ { t = 0 } t && /Sent/ {
        gsub(/[(),]/, " "); for (i = 1; i <= NF; i++) { if ($i == "Sent") b = $(i + 1); if ($i == "bytes") p = $(i + 1)
        if ($i == "dropped") d = $(i + 1); if ($i == "overlimits") o = $(i + 1) } print b, p, d, o; exit }' <<< "$out"
}
# links_json FILE: every device's up (its eth0) and down (its veth) tbf counters
links_json() {
    {
        printf '{"devices": %d, "rate": "%s", "burst": "%s", "queue": "%s", "delay": "%s", "netem": %s, "subnet": "%s", "links": [' \
            "$devices" "$rate" "$burst" "$queue" "$delay" "$([ "$netem" = 1 ] && echo true || echo false)" "$subnet"
        for ((k = 0; k < devices; k++)); do
            read -r ub up ud uo <<< "$(tbf_counts eth0 "${nss[$k]}")"
            read -r db dp dd do_ <<< "$(tbf_counts "${made_veth[$k]}")"
            [ $k -gt 0 ] && printf ', '
            printf '\n  {"device": %d, "namespace": "%s", "address": "%s", "up": {"bytes": %s, "packets": %s, "dropped": %s, "overlimits": %s}, "down": {"bytes": %s, "packets": %s, "dropped": %s, "overlimits": %s}}' \
                $k "${nss[$k]}" "${addrs[$k]}" "${ub:-0}" "${up:-0}" "${ud:-0}" "${uo:-0}" "${db:-0}" "${dp:-0}" "${dd:-0}" "${do_:-0}"
        done
        printf '\n]}\n'
    } > "$1"
}
links_say() {
    local k ub db r=""
    for ((k = 0; k < devices; k++)); do
        read -r ub _ _ _ <<< "$(tbf_counts eth0 "${nss[$k]}")"
        read -r db _ _ _ <<< "$(tbf_counts "${made_veth[$k]}")"
        r="$r device $k: ${ub:-0} up / ${db:-0} down;"
    done
    say "bytes through the links' qdiscs:${r%;}"
}

# ---- run: CMD with the cluster up ------------------------------------------------------------------------
if [ "$cmd" = run ]; then
    "${rest[@]}" <&0 & # (in the background so that a signal reaches the trap at once; stdin kept)
    job_pids=($!)
    wait "${job_pids[0]}"
    rc=$?
    job_pids=()
    links_say
    exit $rc
fi

# ---- check: throughput from device 0 to device 1 --------------------------------------------------------
if [ "$cmd" = check ]; then
    ip netns exec "${nss[1]}" python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen(1); s.settimeout(30)
open(sys.argv[2], "w").close()
c, _ = s.accept(); n = 0; t0 = None
while True:
    b = c.recv(1 << 16)
    if not b: break
    if t0 is None: t0 = time.time()
    n += len(b)
dt = time.time() - t0
print("device 0 -> device 1: %d bytes in %.2f s = %.2f Mbit/s" % (n, dt, n * 8 / dt / 1e6))' "${addrs[1]}" "$dir/listening" &
    job_pids=($!)
    for ((i = 0; i < 100; i++)); do [ -e "$dir/listening" ] && break; sleep 0.05; done
    ip netns exec "${nss[0]}" python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], 5001)); s.sendall(b"x" * 5000000); s.close()' "${addrs[1]}" ||
        fail "the sender in ${nss[0]} failed"
    wait "${job_pids[0]}" || fail "the receiver in ${nss[1]} failed"
    job_pids=()
    echo "${nss[0]} eth0 (what device 0 sends):"
    ip netns exec "${nss[0]}" tc -s qdisc show dev eth0
    echo "${made_veth[1]} (what device 1 receives):"
    tc -s qdisc show dev "${made_veth[1]}"
    exit 0
fi

# ---- train: one scadles-train rank per device ------------------------------------------------------------
mkdir -p "$out" || fail "--out $out: cannot create it"
out=$(cd "$out" && pwd)
mkdir -p "$out/edge"
rm -f "$out"/edge/publish-run*.log "$out"/edge/publish-run*.cmd "$out"/edge/rank*.log # an earlier invocation's
trainlog="$dir/train.log"
sets=(--config "$config" --set clock=real --set stream.source=mqtt --set "stream.mqtt.host=$baddr"
    --set "stream.mqtt.port=$port" --set "out_dir=$out" --set threads=1)
# config.json records the links as shaped (the virtual clock's link model reads them; under the real
# clock they time nothing): the rate in bit/s, the delay where netem applied it, the bucket depth
if [[ $rate =~ ^([0-9]+(\.[0-9]+)?)(bit|kbit|mbit|gbit)$ ]]; then
    case ${BASH_REMATCH[3]} in bit) m=1 ;; kbit) m=1000 ;; mbit) m=1000000 ;; gbit) m=1000000000 ;; esac
    sets+=(--set "devices.link.bandwidth_bps=$(awk -v r="${BASH_REMATCH[1]}" -v m=$m 'BEGIN { printf "%.0f", r * m }')")
fi
lat=0
if [ "$netem" = 1 ] && [[ $delay =~ ^([0-9]+(\.[0-9]+)?)(us|ms|s)$ ]]; then
    case ${BASH_REMATCH[3]} in us) m=0.001 ;; ms) m=1 ;; s) m=1000 ;; esac
    lat=$(awk -v d="${BASH_REMATCH[1]}" -v m=$m 'BEGIN { print d * m }')
fi
sets+=(--set "devices.link.latency_ms=$lat")
if [[ $burst =~ ^([0-9]+)(b|k|kb|m|mb)?$ ]]; then
    case ${BASH_REMATCH[2]} in "" | b) m=1 ;; k | kb) m=1024 ;; m | mb) m=1048576 ;; esac
    sets+=(--set "link_burst_bytes=$((BASH_REMATCH[1] * m))")
fi
: > "$trainlog"
if [ "$launcher" = mpi ]; then
    # each rank enters its device's namespace; PMIx (Open MPI's launch channel, TCP) listens on the
    # bridge so that the ranks reach mpirun from their namespaces; MPI's own traffic is the TCP BTL
    # over the devices' eth0 (the shaped veths), never shared memory
    cat > "$dir/rank.sh" <<EOF
#!/bin/sh
# rank.sh: runs one MPI rank inside its device's namespace (edge_cluster.sh, cluster $name)
r=\${OMPI_COMM_WORLD_RANK:-\${PMI_RANK:-}}
[ -n "\$r" ] || { echo "rank.sh: not started by mpirun (no OMPI_COMM_WORLD_RANK)" >&2; exit 2; }
exec ip netns exec "${name}d\$r" "\$@"
EOF
    chmod 755 "$dir/rank.sh"
    root_flag=()
    [ "$(id -u)" = 0 ] && root_flag=(--allow-run-as-root)
    # shellcheck disable=SC2054 # (tcp,self is one argument)
    mpi_cmd=("$mpirun" "${root_flag[@]}" --oversubscribe --bind-to none -np "$devices"
        --mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include "$subnet" --mca oob_tcp_if_include "$subnet"
        "$dir/rank.sh" "$train" "${sets[@]}" --set backend=mpi "${rest[@]}")
    echo "${mpi_cmd[*]}" > "$out/edge/command.txt"
    PMIX_MCA_ptl_tcp_if_include=$subnet PMIX_MCA_ptl_tcp_remote_connections=1 "${mpi_cmd[@]}" > "$trainlog" 2>&1 &
    job_pids=($!)
    trainer=$!
else
    # torchrun-style: WORLD_SIZE, RANK, MASTER_ADDR (device 0's address), MASTER_PORT in every namespace
    (
        pids=()
        for ((k = 0; k < devices; k++)); do
            log="$dir/rank$k.log"
            [ $k = 0 ] && log=$trainlog
            ip netns exec "${nss[$k]}" env WORLD_SIZE="$devices" RANK=$k LOCAL_RANK=0 MASTER_ADDR="${addrs[0]}" \
                MASTER_PORT=29500 "$train" "${sets[@]}" "${rest[@]}" > "$log" 2>&1 &
            pids+=($!)
        done
        rc=0
        for ((k = 0; k < devices; k++)); do # the first failure ends the others (they would wait comm_timeout_s)
            wait -n "${pids[@]}"
            r=$?
            if [ $r != 0 ] && [ $rc = 0 ]; then
                rc=$r
                for p in "${pids[@]}"; do kill -TERM "$p" 2> /dev/null; done
            fi
        done
        exit $rc
    ) &
    job_pids=($!)
    trainer=$!
    echo "torchrun-style: WORLD_SIZE=$devices RANK=k LOCAL_RANK=0 MASTER_ADDR=${addrs[0]} MASTER_PORT=29500 ip netns exec ${name}d<k> $train ${sets[*]} ${rest[*]}" > "$out/edge/command.txt"
fi
tail -n +1 -f --pid="$trainer" "$trainlog" &
tailer=$!

# The publisher: a fresh scadles-publish for each run (the trainer prints "run MODE seed S: ..." when a
# run starts), started once every device's source has subscribed to its topic, with the rates,
# arrivals, partition and dataset of the run's config.json. mosquitto logs each subscription as
# "TIME: CLIENT QOS TOPIC"; every run's sources are new clients (a reconnect keeps its client id), so
# run n may start publishing when n x devices distinct (client, topic) pairs have subscribed.
publisher_args() { # SEED EPOCH: prints scadles-publish's arguments one per line, or fails naming why
    python3 - "$out/config.json" "$1" "$2" "$baddr" "$port" "$devices" <<'EOF'
import json, sys
path, seed, epoch, host, port, n = sys.argv[1:]
try:
    c = json.load(open(path))
except (OSError, ValueError) as e:
    sys.exit("cannot read %s (%s)" % (path, e))
d = c["devices"]
if d["count"] != int(n):
    sys.exit("the experiment has %d devices but the cluster %s: pass --devices %d, or --set devices.rates=... with %s rates"
             % (d["count"], n, d["count"], n))
rates = ",".join("%.17g" % x["rate"] for x in d["list"])
p = c["partition"]
if p["kind"] == "iid":
    part = "iid"
elif p["kind"] == "slices":
    part = "slices:%d" % p["classes_per_device"]
else:
    sys.exit("partition %s: scadles-publish partitions iid or slices only" % p["kind"])
s = c["stream"]
a = ["--broker", "mqtt", "--host", host, "--port", port, "--devices", n, "--device", "all", "--rate", rates,
     "--arrival", d["arrival"], "--partition", part, "--dataset", c["dataset"], "--seed", seed, "--epoch", epoch,
     "--qos", str(s["mqtt"]["qos"]), "--topic-prefix", s["topic_prefix"], "--quiet"]
if c.get("data_root"):
    a += ["--data-root", c["data_root"]]
print("\n".join(a))
EOF
}
publisher_manager() {
    local runs=0 waiting=0 k=0 seed=1 pub="" n subs prefix args
    local epoch0=$(($(date +%s) - 1577836800))
    trap '[ -n "$pub" ] && stop_pid "$pub" INT; exit 0' TERM
    while kill -0 "$trainer" 2> /dev/null; do
        n=$(grep -c '^run [a-z]* seed [0-9]*: [0-9]* devices' "$trainlog")
        if [ "$n" -gt "$runs" ]; then
            [ -n "$pub" ] && stop_pid "$pub" INT
            pub=""
            runs=$n
            seed=$(grep '^run [a-z]* seed [0-9]*: [0-9]* devices' "$trainlog" | sed -n "${n}p" | sed 's/^run [a-z]* seed \([0-9]*\):.*/\1/')
            waiting=1
            prefix=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stream"]["topic_prefix"])' "$out/config.json" 2> /dev/null || echo trainer-)
        fi
        if [ "$waiting" = 1 ]; then
            subs=$(grep -oE "^[0-9]+: [^ ]+ [0-2] ${prefix}[0-9]+\$" "$blog" | cut -d' ' -f2,4 | sort -u | wc -l)
            if [ "$subs" -ge $((runs * devices)) ]; then
                if ! args=$(publisher_args "$seed" $((epoch0 + k)) 2> "$dir/pub_err"); then
                    say "cannot start the publisher: $(cat "$dir/pub_err"); stopping the training job"
                    kill -TERM "$trainer" 2> /dev/null
                    exit 1
                fi
                mapfile -t argv <<< "$args"
                "$publish" "${argv[@]}" > "$out/edge/publish-run$runs.log" 2>&1 &
                pub=$!
                echo "$pub" > "$dir/publisher.pid"
                echo "$publish ${argv[*]}" > "$out/edge/publish-run$runs.cmd"
                k=$((k + 1))
                waiting=0
            fi
        elif [ -n "$pub" ] && ! kill -0 "$pub" 2> /dev/null; then
            wait "$pub"
            say "the publisher (run $runs) exited with status $? before the run ended; its log:"
            tail -n 20 "$out/edge/publish-run$runs.log" >&2
            kill -TERM "$trainer" 2> /dev/null
            exit 1
        fi
        sleep 0.1
    done
    [ -n "$pub" ] && stop_pid "$pub" INT
    exit 0
}
publisher_manager &
pub_manager=$!

wait "$trainer"
rc=$?
job_pids=()
wait "$tailer" 2> /dev/null
tailer=""
wait "$pub_manager" # it sees the trainer gone within 0.1 s, stops the publisher and ends
mrc=$?
pub_manager=""
links_json "$out/edge_links.json"
links_say
cp "$blog" "$out/edge/broker.log" 2> /dev/null
cp "$dir"/rank*.log "$out/edge/" 2> /dev/null
cp "$trainlog" "$out/edge/train.log"
if [ $rc != 0 ]; then
    say "the training job failed (exit $rc); its output is above and in $out/edge/train.log"
    exit 1
fi
[ $mrc = 0 ] || fail "the publisher failed (above); the training job ended"
say "done: $out (summary.json, accuracy.png, edge_links.json, edge/)"
exit 0
