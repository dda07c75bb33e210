"""Path-MTU discovery over real sockets on loopback (MTU 65536): the MSS grows between udt
peers, data stays intact, UDT_MSS fixes it, UDT_PMTUD turns it off (protocol.md §13); and
through two namespaces whose veth MTU drops mid-transfer (a black hole), data still crosses."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest

import udt
from loopback_pair import send_and_receive
from netns import Topology, require_netns
from udt.cli._common import MSS_AUTO, parse_mss
from udt.options import OPTION_SPECS, SocketOption

DATA = os.urandom(8 << 20)


def _transfer(client_opts: dict, server_opts: dict) -> tuple[int, int, str]:
    """Send DATA client -> server; (client MSS, server MSS, sha256 received)."""
    result: dict = {}
    with udt.socket() as srv:
        for opt, value in server_opts.items():
            srv.setsockopt(opt, value)
        srv.bind(("127.0.0.1", 0))
        srv.listen()

        def serve() -> None:
            conn, _ = srv.accept()
            with conn:
                h = hashlib.sha256()
                while chunk := conn.recv(1 << 20):
                    h.update(chunk)
                result["sha"] = h.hexdigest()
                result["mss"] = conn.getsockopt(udt.UDT_MSS)

        t = threading.Thread(target=serve)
        t.start()
        try:
            with udt.socket() as cl:
                for opt, value in client_opts.items():
                    cl.setsockopt(opt, value)
                cl.settimeout(30)
                cl.connect(srv.getsockname())
                cl.sendall(DATA)
                cl.flush(30)
                mss = cl.getsockopt(udt.UDT_MSS)
        finally:
            t.join(30)
    return mss, result["mss"], result["sha"]


def test_option_is_public_and_on_by_default():
    assert udt.UDT_PMTUD is SocketOption.UDT_PMTUD
    assert OPTION_SPECS[SocketOption.UDT_PMTUD].default is True
    with udt.socket() as s:
        assert s.getsockopt(udt.UDT_PMTUD) is True
        s.setsockopt(udt.UDT_MSS, 9000)  # a fixed MSS: no discovery
        assert s.getsockopt(udt.UDT_PMTUD) is False
        s.setsockopt(udt.UDT_PMTUD, True)  # unless asked again: it grows from 9000
        assert s.getsockopt(udt.UDT_PMTUD) is True


def test_cli_mss_auto():
    assert parse_mss("auto") == MSS_AUTO and parse_mss("9000") == 9000
    with pytest.raises(ValueError, match="invalid MSS"):
        parse_mss("automatic")


@pytest.mark.parametrize("secret", [False, True])
def test_loopback_mss_grows_and_data_is_intact(secret):
    opts = {udt.UDT_PMTUD: True}
    if secret:
        opts[udt.UDT_PASSPHRASE] = "correct horse battery staple"
    client_mss, server_mss, digest = _transfer(opts, opts)
    assert digest == hashlib.sha256(DATA).hexdigest()
    # the most a UDP datagram holds; with a passphrase the seal's 24 bytes count in UDT_MSS
    assert client_mss == server_mss == 65535


@pytest.mark.parametrize(
    ("client_opts", "server_opts"),
    [({udt.UDT_MSS: 1500}, {udt.UDT_PMTUD: True}), ({udt.UDT_PMTUD: True}, {udt.UDT_PMTUD: False})],
    ids=["client-fixed-mss", "server-off"],
)
def test_either_side_keeps_the_handshake_mss(client_opts, server_opts):
    client_mss, server_mss, digest = _transfer(client_opts, server_opts)
    assert digest == hashlib.sha256(DATA).hexdigest()
    assert client_mss == server_mss == 1500


def test_maxbw_holds_for_packets_queued_before_the_mss_grew():
    """3 MiB queued at MSS 1500 through a forwarder (so the first probe is confirmed only after
    the buffer filled), encrypted, under a UDT_MAXBW of 4 MB/s: the packets of the old size
    must still leave at about 4 MB/s.  The cap's per-packet period scaled to the grown MSS once
    paced them at 1456/65535 of it (~90 kB/s: a stall after the first megabyte)."""
    import time

    from rebinding_nat import RebindingNat

    options = {udt.UDT_PASSPHRASE: "correct horse battery staple", udt.UDT_PMTUD: True}
    payload = os.urandom(3 << 20)
    got = bytearray()
    with udt.create_server(("127.0.0.1", 0), options=options) as server:
        nat = RebindingNat(server.getsockname())
        try:
            client = udt.create_connection(nat.address, timeout=5, options=options)
            server.settimeout(5)
            conn, _ = server.accept()
            with client, conn:
                client.setsockopt(udt.UDT_MAXBW, 4_000_000)

                def read() -> None:
                    conn.settimeout(20)
                    while chunk := conn.recv(1 << 20):
                        got.extend(chunk)

                reader = threading.Thread(target=read)
                reader.start()
                started = time.monotonic()
                client.sendall(payload)
                client.flush(timeout=20)
                elapsed = time.monotonic() - started
                client.shutdown(udt.SHUT_WR)
                reader.join(20)
        finally:
            nat.close()
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert elapsed < 5, f"3 MiB at a 4 MB/s cap took {elapsed:.1f} s"


def _grown_pair(options: dict) -> tuple[dict, dict, int, int, int, int]:
    """A connection that moved 8 MiB; (client perfmon, server perfmon, client and server
    UDP_RCVBUF before and after the transfer)."""
    with udt.create_server(("127.0.0.1", 0), options=options) as server:
        server_before = server.getsockopt(udt.UDP_RCVBUF)
        client = udt.create_connection(server.getsockname(), timeout=10, options=options)
        client_before = client.getsockopt(udt.UDP_RCVBUF)
        server.settimeout(10)
        conn, _ = server.accept()
        with client, conn:
            assert send_and_receive(client, conn, DATA, 20) == DATA
            return (
                client.perfmon(),
                conn.perfmon(),
                client_before,
                client.getsockopt(udt.UDP_RCVBUF),
                server_before,
                conn.getsockopt(udt.UDP_RCVBUF),
            )


def test_perfmon_reports_discovery_and_kernel_buffers_follow_the_mss():
    """At 64 KiB the default UDP buffers (8192 datagrams of 1500 bytes for receiving) held ~180
    datagrams: a burst overflowed them (RcvbufErrors, ~9 % retransmitted on loopback).  They
    grow with the MSS discovery confirms, on both ends, before the big packets come."""
    sender, receiver, c_before, c_after, s_before, s_after = _grown_pair({udt.UDT_PMTUD: True})
    for stats in sender, receiver:
        assert stats["mss"] == stats["pmtud_max_mss"] == 65535
    assert sender["pmtud_probes_confirmed"] >= 1
    assert sender["pmtud_probes_sent"] >= sender["pmtud_probes_confirmed"] + sender["pmtud_probes_lost"]
    # (the client grew as its first probe left, within connect(): compare with the listener's start)
    assert c_after > s_before and s_after > s_before
    assert s_after <= 2 * (64 << 20)  # bounded (the kernel reports twice the request)


def test_fixed_mss_and_user_set_buffers_stay_as_set():
    """The MSS scaling leaves a UDP_RCVBUF the user set alone; the only growth left is the
    window-following one (test_udp_buffer.py), which UDT_RCVBUF bounds: here below that size."""
    options = {udt.UDT_MSS: 1500, udt.UDP_RCVBUF: 1 << 20, udt.UDT_RCVBUF: 1 << 19}
    sender, receiver, c_before, c_after, s_before, s_after = _grown_pair(options)
    for stats in sender, receiver:
        assert stats["mss"] == 1500
        assert stats["pmtud_max_mss"] == stats["pmtud_probes_sent"] == 0
    assert (c_after, s_after) == (c_before, s_before)
    # discovery, but the user's sizes
    options = {udt.UDT_PMTUD: True, udt.UDP_RCVBUF: 1 << 20, udt.UDT_RCVBUF: 1 << 19}
    sender, _, c_before, c_after, s_before, s_after = _grown_pair(options)
    assert sender["mss"] > 1500  # grown (a 512 KiB UDT_RCVBUF holds few 64 KiB packets)
    assert (c_after, s_after) == (c_before, s_before)


BLACK_HOLE_RECEIVER = r"""
import hashlib, json, sys
import udt
size = int(sys.argv[1])
options = {udt.UDT_PASSPHRASE: sys.argv[2]} if len(sys.argv) > 2 else {}
# a small receive buffer: when the reader holds off, the rest waits in the sender's ring
with udt.create_server(("10.9.0.2", 45100), options={udt.UDT_RCVBUF: 4 << 20, **options}) as server:
    print("ready", flush=True)
    server.settimeout(30)
    conn, _ = server.accept()
    with conn:
        conn.settimeout(60)
        h = hashlib.sha256()
        got = 0
        paused = False
        while got < size:
            if not paused and got >= size // 4:
                paused = True                    # the test lowers the MTU while we hold off
                print("quarter", json.dumps(conn.perfmon()["mss"]), flush=True)
                sys.stdin.readline()
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            got += len(chunk)
        print(json.dumps({"sha": h.hexdigest(), "bytes": got, "perfmon": conn.perfmon()}), flush=True)
"""

BLACK_HOLE_SENDER = r"""
import hashlib, json, os, sys
import udt
size = int(sys.argv[1])
data = os.urandom(size)
options = {udt.UDT_PASSPHRASE: sys.argv[2]} if len(sys.argv) > 2 else {}
with udt.create_connection(("10.9.0.2", 45100), timeout=30, options=options) as conn:
    conn.settimeout(60)
    conn.sendall(data)
    conn.flush(60)
    print(json.dumps({"sha": hashlib.sha256(data).hexdigest(), "perfmon": conn.perfmon()}), flush=True)
"""


@pytest.mark.slow
@pytest.mark.netns
@pytest.mark.parametrize("secret", [(), ("black hole passphrase",)], ids=["plain", "sealed"])
def test_black_hole_through_a_veth_whose_mtu_drops(secret):
    """Two namespaces joined by a veth of MTU 65535: the MSS grows to it; then, mid-transfer,
    the receiving end's MTU drops to 1500, which silently drops every larger frame (no ICMP:
    a black hole).  The sender falls back to 1500 and the big packets already written cross as
    fragments (protocol.md §13); every byte arrives."""
    require_netns()
    size = 48 << 20
    with Topology() as net:
        a, b = net.namespace("a"), net.namespace("b")
        link = net.veth(a, b, ipv4=("10.9.0.1/24", "10.9.0.2/24"), mtu=65535)
        receiver = b.python_popen(BLACK_HOLE_RECEIVER, str(size), *secret)
        assert receiver.stdout.readline().strip() == "ready", receiver.stderr.read()
        sender = a.python_popen(BLACK_HOLE_SENDER, str(size), *secret)
        line = receiver.stdout.readline().split()
        assert line and line[0] == "quarter", receiver.stderr.read()
        assert int(line[1]) > 9000  # grown before the drop
        b.ip("link", "set", "dev", link.right_name, "mtu", "1500")
        receiver.stdin.write("go\n")
        receiver.stdin.flush()
        sent_out, sent_err = sender.communicate(timeout=90)
        recv_out, recv_err = receiver.communicate(timeout=30)
        assert sender.returncode == 0, sent_err
        assert receiver.returncode == 0, recv_err
        sent, got = json.loads(sent_out), json.loads(recv_out)
    assert got["bytes"] == size and got["sha"] == sent["sha"]
    pmtud = " ".join(f"{k}={v}" for k, v in sent["perfmon"].items() if k.startswith("pmtud") or k == "mss")
    assert sent["perfmon"]["pmtud_black_holes"] >= 1 and sent["perfmon"]["mss"] <= 1500 + 512, pmtud
    assert sent["perfmon"]["pmtud_fragments_sent"] > 0
    assert got["perfmon"]["pmtud_fragments_received"] > 0
