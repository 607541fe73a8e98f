#!/usr/bin/env bash
# netns_link.sh: thin links between network namespaces on one Linux host, for MPI runs on the
# real clock over a shaped network (docs/compression.md, "Emulated and shaped links"). Needs root
# and iproute2. Each namespace devK (address 10.9.0.(K+1)) joins bridge br0 through a veth pair and
# shapes what it sends with a token-bucket qdisc (tbf); a one-way delay is added with netem when
# the kernel has sch_netem.
#
#   scripts/netns_link.sh up N [RATE [BURST [DELAY]]]   e.g. up 4 10mbit 64kb 1ms
#   scripts/netns_link.sh check                         measures dev0 -> dev1 throughput (python3)
#   scripts/netns_link.sh down N
set -euo pipefail
cmd=${1:-}
case "$cmd" in
up)
    n=${2:?usage: netns_link.sh up N [RATE [BURST [DELAY]]]}
    rate=${3:-10mbit} burst=${4:-64kb} delay=${5:-1ms}
    ip link add br0 type bridge
    ip link set br0 up
    ip addr add 10.9.0.254/24 dev br0
    for ((i = 0; i < n; i++)); do
        ip netns add "dev$i"
        ip link add "veth$i" type veth peer name eth0 netns "dev$i"
        ip link set "veth$i" master br0 up
        ip -n "dev$i" addr add "10.9.0.$((i + 1))/24" dev eth0
        ip -n "dev$i" link set eth0 up
        ip -n "dev$i" link set lo up
        if ip netns exec "dev$i" tc qdisc add dev eth0 root handle 1: netem delay "$delay" 2>/dev/null; then
            ip netns exec "dev$i" tc qdisc add dev eth0 parent 1:1 handle 10: tbf rate "$rate" burst "$burst" latency 50ms
        else
            [ "$i" = 0 ] && echo "netns_link: no sch_netem in this kernel: shaping the rate only (no added delay)" >&2
            ip netns exec "dev$i" tc qdisc add dev eth0 root tbf rate "$rate" burst "$burst" latency 50ms
        fi
    done
    echo "namespaces dev0..dev$((n - 1)) at 10.9.0.1..10.9.0.$n, $rate each way out of every namespace"
    ;;
check)
    ip netns exec dev1 python3 -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('10.9.0.2', 5001)); s.listen(1)
c, _ = s.accept(); n = 0; t0 = None
while True:
    b = c.recv(1 << 16)
    if not b: break
    if t0 is None: t0 = time.time()
    n += len(b)
dt = time.time() - t0
print('dev0 -> dev1: %d bytes in %.2f s = %.2f Mbit/s' % (n, dt, n * 8 / dt / 1e6))" &
    sleep 1
    ip netns exec dev0 python3 -c "
import socket
s = socket.create_connection(('10.9.0.2', 5001)); s.sendall(b'x' * 5000000); s.close()"
    wait
    ip netns exec dev0 tc -s qdisc show dev eth0
    ;;
down)
    n=${2:?usage: netns_link.sh down N}
    for ((i = 0; i < n; i++)); do ip netns del "dev$i" 2>/dev/null || true; done
    ip link del br0 2>/dev/null || true
    ;;
*)
    echo "usage: netns_link.sh up N [RATE [BURST [DELAY]]] | check | down N" >&2
    exit 2
    ;;
esac
