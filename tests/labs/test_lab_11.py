"""Lab 11-no-route-to-host: runs end to end with ``--quick`` and every self-check passes."""

from __future__ import annotations

import subprocess

import pytest

from tests.labs.lab_runner import assert_quick_run_passes, can_use_namespaces, skip_without

EXPECTED_PASSES = [
    "REJECT: 'No route to host', errno 113 EHOSTUNREACH, an ICMP type 3 came back",
    "the broker listens all along; the REJECT rule counted the SYNs",
    "DROP: 'Connection timed out', errno 110 ETIMEDOUT, the SYN sent again, nothing came back",
    "after iptables -F: mosquitto_pub succeeds and mosquitto_sub receives 123456",
    "nothing listening: 'Connection refused', errno 111 ECONNREFUSED, a RST came back",
    "no route: 'Network is unreachable', errno 101 ENETUNREACH, no SYN ever left",
    "the host's iptables rules and tcp_syn_retries are untouched, the namespaces are gone",
]


def needs_namespaces_and_iptables() -> None:
    if not can_use_namespaces():
        pytest.skip("network namespaces need root and iproute2")
    skip_without("iptables", "mosquitto_pub", "mosquitto_sub")


def test_lab_11_runs_quick_and_every_self_check_passes() -> None:
    needs_namespaces_and_iptables()
    assert_quick_run_passes("11-no-route-to-host", EXPECTED_PASSES)


def test_lab_11_leaves_no_network_namespace_behind() -> None:
    needs_namespaces_and_iptables()
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert "epoll-mqtt-lab11-" not in listing
