#!/usr/bin/env bash
# Prints "RDMAFT_DEVICE=<dev> RDMAFT_ADDR=<ipv4>" for an RDMA device on this
# host and exits 0; exits 1 (with a note on stderr) if there is none.
# RDMAFT_DEVICE / RDMAFT_ADDR from the environment win over discovery.
set -euo pipefail

# /sys/class/infiniband is what ibv_devices lists (RoCE, IB, iWARP alike).
dev=${RDMAFT_DEVICE:-$(ls /sys/class/infiniband 2>/dev/null | head -n1 || true)}
if [ -z "$dev" ] || [ ! -e "/sys/class/infiniband/$dev" ]; then
    echo "host-rdma-env: no RDMA device on this host" >&2
    exit 1
fi

addr=${RDMAFT_ADDR:-}
if [ -z "$addr" ]; then
    # rdma_cm addresses a device by an IP of its netdev (RoCE netdev or IPoIB).
    netdev=$(rdma link show 2>/dev/null | awk -v d="$dev" '$2 ~ "^"d"/" { for (i = 1; i < NF; i++) if ($i == "netdev") { print $(i+1); exit } }' || true)
    if [ -n "$netdev" ]; then
        addr=$(ip -4 -o addr show dev "$netdev" 2>/dev/null | awk '{ sub("/.*", "", $4); print $4; exit }' || true)
    fi
fi
if [ -z "$addr" ]; then
    echo "host-rdma-env: RDMA device $dev has no IPv4 address on its netdev; set RDMAFT_ADDR" >&2
    exit 1
fi
echo "RDMAFT_DEVICE=$dev RDMAFT_ADDR=$addr"
