#!/usr/bin/env bash
# Installs the Debian packages the tests drive: mosquitto (reference broker),
# mosquitto-clients (mosquitto_sub/mosquitto_pub), libpcap0.8 (scapy's BPF filters),
# strace (tests that assert the order of syscalls), iproute2 (ss, for TCP states), iptables
# (lab 11's firewall inside a network namespace) and gdb (lab 08's thread backtraces).
# Idempotent: does nothing when everything is already there.
set -euo pipefail
need=()
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
ldconfig -p 2>/dev/null | grep -q 'libpcap\.so\.0\.8' || need+=(libpcap0.8)
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || need+=(iptables)
command -v gdb >/dev/null 2>&1 || need+=(gdb)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing Debian packages: ${need[*]}" >&2
    echo "install them with: sudo apt-get install ${need[*]}" >&2
    exit 1
fi
echo "installing ${need[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
