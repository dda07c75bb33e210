"""Rendezvous through real NATs: two hosts, each behind its own nftables masquerade, joined by an
"internet" namespace (tests/nat_topology.py builds it; docs/testing.md, "NAT", has the facts).

Through NATs that keep the port the rendezvous connects and the data arrives intact (sha256);
behind a symmetric NAT it fails within the connect timeout and says what it tried.  Both with
the socket API and with ``udt-send --rendezvous`` / ``udt-recv --rendezvous``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import pytest

from nat_topology import Mapping, NatPair, build_nat_pair, require_nat
from netns import Topology

pytestmark = pytest.mark.netns

RENDEZVOUS_TIMEOUT_S = 3.0  # UDT_CONNTIMEO 300 ms: a rendezvous waits ten times that

# One rendezvous peer: bind PORT, connect to PEER:PORT at the same time as the other side, then
# send SIZE seeded random bytes (role "send") or read them (role "recv"); print one JSON line.
PEER_CODE = r"""
import hashlib, json, random, sys, time
import udt
peer, port, role, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
sock = udt.socket(udt.AF_INET, udt.SOCK_STREAM)
sock.setsockopt(udt.UDT_RENDEZVOUS, True)
sock.setsockopt(udt.UDT_CONNTIMEO, 300)
sock.bind(("0.0.0.0", port))
started = time.monotonic()
try:
    sock.connect((peer, port))
except OSError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": exc.strerror,
                      "seconds": time.monotonic() - started}))
    sock.close()
    sys.exit(0)
result = {"peer": list(sock.getpeername()), "connect_seconds": time.monotonic() - started}
if role == "send":
    data = random.Random(size).randbytes(size)
    sock.sendall(data)
    result["sha256"] = hashlib.sha256(data).hexdigest()
else:
    digest, got = hashlib.sha256(), 0
    while got < size:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        digest.update(chunk)
        got += len(chunk)
    result.update(sha256=digest.hexdigest(), bytes=got)
sock.close()
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def cone_nats():
    """Both NATs keep the port (plain ``masquerade``)."""
    require_nat()
    with Topology(prefix="nat") as topology:
        yield build_nat_pair(topology, Mapping.PORT_PRESERVING, Mapping.PORT_PRESERVING)


@pytest.fixture(scope="module")
def symmetric_nat():
    """Host A behind a symmetric NAT (``masquerade fully-random``), host B behind one that keeps it."""
    require_nat()
    with Topology(prefix="nat") as topology:
        yield build_nat_pair(topology, Mapping.SYMMETRIC, Mapping.PORT_PRESERVING)


def _rendezvous(net: NatPair, port: int, size: int) -> tuple[dict, dict]:
    """Both peers started together, A sending to B; their JSON results."""
    sender = net.host_a.python_popen(PEER_CODE, net.public_b, str(port), "send", str(size))
    receiver = net.host_b.python_popen(PEER_CODE, net.public_a, str(port), "recv", str(size))
    results = []
    for process in (sender, receiver):
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results[0], results[1]


def test_rendezvous_through_port_preserving_nats(cone_nats: NatPair) -> None:
    size = 8 << 20
    sent, received = _rendezvous(cone_nats, 9000, size)
    assert "error" not in sent and "error" not in received, (sent, received)
    # each side sees the other NAT's public address and the port it was told: kept by both NATs
    assert sent["peer"] == [cone_nats.public_b, 9000]
    assert received["peer"] == [cone_nats.public_a, 9000]
    assert received["bytes"] == size
    assert received["sha256"] == sent["sha256"]
    # the mappings the kernel made: private 10.0.1.2:9000 left natA as 198.51.100.1:9000
    assert cone_nats.public_port(cone_nats.nat_a, "10.0.1.2", 9000) == 9000
    assert cone_nats.public_port(cone_nats.nat_b, "10.0.2.2", 9000) == 9000


def test_rendezvous_behind_symmetric_nat_fails_and_says_what_it_tried(symmetric_nat: NatPair) -> None:
    sent, received = _rendezvous(symmetric_nat, 9100, 1 << 20)
    for result, peer in ((sent, symmetric_nat.public_b), (received, symmetric_nat.public_a)):
        assert result.get("error") == "ConnectTimeoutError", result
        assert result["seconds"] < RENDEZVOUS_TIMEOUT_S + 1.0, result  # within the connect timeout
        message = result["message"]
        assert "local port 9100" in message
        assert f"to {peer}:9100" in message
        count = int(message.split(" handshake")[0].rsplit(" ", 1)[-1])
        assert count >= RENDEZVOUS_TIMEOUT_S / 0.25 - 2  # one every 250 ms, all unanswered
        assert "nothing came back" in message
        assert "must keep the port" in message and "symmetric NAT" in message
    # the cause: natA gave the flow a random public port, natB kept it
    assert symmetric_nat.public_port(symmetric_nat.nat_a, "10.0.1.2", 9100) not in (None, 9100)
    assert symmetric_nat.public_port(symmetric_nat.nat_b, "10.0.2.2", 9100) == 9100


def test_without_a_firewall_the_first_handshake_takes_the_late_peers_port() -> None:
    """The conntrack trap docs/testing.md describes: with no rule dropping unsolicited inbound,
    A's first handshake reaches natB before B sent anything and leaves an entry there that makes
    natB map B's port 9400 to another one; the rendezvous then fails although both NATs are
    plain ``masquerade``.  Our NATs drop unsolicited inbound for this reason."""
    require_nat()
    with Topology(prefix="nat") as topology:
        net = build_nat_pair(topology, Mapping.PORT_PRESERVING, Mapping.PORT_PRESERVING, drop_unsolicited=False)
        early = net.host_a.python_popen(PEER_CODE, net.public_b, "9400", "send", "1000")
        time.sleep(0.5)  # A's first handshakes reach natB first
        late = net.host_b.python_popen(PEER_CODE, net.public_a, "9400", "recv", "1000")
        results = []
        for process in (early, late):
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        assert all(r.get("error") == "ConnectTimeoutError" for r in results), results
        assert net.public_port(net.nat_a, "10.0.1.2", 9400) == 9400
        assert net.public_port(net.nat_b, "10.0.2.2", 9400) not in (None, 9400)


def _cli(tool: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"udt.cli.{tool}", *args]


def test_cli_rendezvous_across_nats(cone_nats: NatPair, tmp_path) -> None:
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(3 << 20))
    output = tmp_path / "out"
    output.mkdir()
    port = "9200"
    recv = cone_nats.host_b.popen(
        _cli("recv", "--rendezvous", f"{cone_nats.public_a}:{port}", "--port", port, "-o", str(output), "--json")
    )
    send = cone_nats.host_a.popen(
        _cli("send", "--rendezvous", str(source), f"{cone_nats.public_b}:{port}", "--json", "--timeout", "10")
    )
    send_out, send_err = send.communicate(timeout=60)
    recv_out, recv_err = recv.communicate(timeout=60)
    assert send.returncode == 0, send_err
    assert recv.returncode == 0, recv_err
    sent, received = json.loads(send_out), json.loads(recv_out)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert [f["sha256"] for f in sent["files"]] == [digest]
    assert hashlib.sha256((output / "payload.bin").read_bytes()).hexdigest() == digest
    assert received["exit_code"] == 0


def test_cli_rendezvous_behind_symmetric_nat_reports_the_nat(symmetric_nat: NatPair, tmp_path) -> None:
    source = tmp_path / "payload.bin"
    source.write_bytes(b"x" * 1000)
    output = tmp_path / "out"
    output.mkdir()
    port = "9300"
    started = time.monotonic()
    recv = symmetric_nat.host_b.popen(
        _cli("recv", "--rendezvous", f"{symmetric_nat.public_a}:{port}", "--port", port, "-o", str(output))
        + ["--timeout", "3"]
    )
    send = symmetric_nat.host_a.popen(
        _cli("send", "--rendezvous", str(source), f"{symmetric_nat.public_b}:{port}", "--timeout", "3")
    )
    _, send_err = send.communicate(timeout=30)
    _, recv_err = recv.communicate(timeout=30)
    assert time.monotonic() - started < 10
    for process, err, peer in ((send, send_err, symmetric_nat.public_b), (recv, recv_err, symmetric_nat.public_a)):
        assert process.returncode == 4, err  # ExitCode.TIMEOUT
        assert f"local port {port}" in err and f"{peer}:{port}" in err, err
        assert "handshakes sent" in err and "must keep the port" in err, err
    assert not any(output.iterdir())
