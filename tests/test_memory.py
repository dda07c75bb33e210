"""Resident memory stays within the configured limits (figures in docs/testing.md): 1,000 idle
connections, a sender whose receiver stopped reading, a receiver facing 20 % loss.  Both ends run
in this process, so each figure is the growth of both together.  Run with -s to see them."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import udt
from loopback_pair import send_and_receive
from test_connect_close import relayed_pair

LOOP4 = "127.0.0.1"
MB = 1 << 20
RING = 8192 * 1456  # the old fixed rings (UDT_SNDBUF / UDT_RCVBUF before they became caps), bytes
IDLE_BUDGET = 64 * 1024  # per endpoint, before any buffer is needed (issue 10)


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _abort_all(socks) -> None:
    def abort(sock) -> None:
        sock.setsockopt(udt.UDT_LINGER, 0)
        sock.close()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(abort, socks))


@pytest.mark.slow
def test_rss_of_1000_idle_connections():
    server = udt.create_server((LOOP4, 0), backlog=1024)
    server.settimeout(10)
    clients, accepted = [], []
    before = rss()
    try:
        port = None
        for _ in range(1000):
            sock = udt.socket()
            sock.bind((LOOP4, port or 0))  # all clients share one port (UDT_REUSEADDR)
            port = sock.getsockname()[1]
            clients.append(sock)
            sock.settimeout(10)
            sock.connect(server.getsockname())
            accepted.append(server.accept()[0])
        time.sleep(2)  # a couple of keep-alive rounds
        grown = rss() - before
        print(f"\nRSS: 1000 idle connections (2000 endpoints) grew {grown / MB:.1f} MiB")
        # measured ~21 KiB per endpoint: buffers take chunks only when data needs them (150 KiB
        # before, when both rings' slot bookkeeping and the loss lists came at establishment)
        print(f"RSS: {grown / 2000 / 1024:.1f} KiB per endpoint")
        assert grown < 2000 * IDLE_BUDGET
    finally:
        _abort_all(clients + accepted)
        server.close()


@pytest.mark.slow
def test_rss_of_a_sender_whose_receiver_stopped_reading():
    with relayed_pair() as (client, conn, relay):
        before = rss()
        client.settimeout(3)
        sent = 0
        with pytest.raises(TimeoutError):
            while True:  # the receiver never reads: both rings fill, then send blocks
                client.sendall(b"s" * MB)
                sent += MB
        grown = rss() - before
        print(f"\nRSS: sender blocked after {sent / MB:.0f} MiB queued, grew {grown / MB:.1f} MiB")
        # the limits follow the path, not the caps: a reader that stopped never makes them grow
        assert sent <= 2 * RING + MB
        assert grown < 2 * RING + 64 * MB


@pytest.mark.slow
def test_rss_of_a_receiver_facing_20_percent_loss():
    from udt.tools.impair import Impairment

    lossy = Impairment(loss=0.20, delay=0.005)
    with relayed_pair(a_to_b=lossy, seed=20) as (client, conn, relay):
        payload = os.urandom(4 * MB)
        got = bytearray()
        peak = [0]

        def read() -> None:
            while len(got) < len(payload):
                got.extend(conn.recv(MB))
                peak[0] = max(peak[0], rss())

        before = rss()
        reader = threading.Thread(target=read)
        reader.start()
        client.sendall(payload)
        client.flush(timeout=30)
        reader.join(30)
        assert bytes(got) == payload
        grown = max(peak[0], rss()) - before
        print(f"\nRSS: 4 MiB through 20 % loss, peak growth {grown / MB:.1f} MiB")
        assert grown < 2 * RING + 64 * MB


@pytest.mark.slow
def test_rss_of_100_encrypted_pairs_after_a_transfer():
    """scrypt's 16 MiB block raises glibc's dynamic mmap threshold, so the rings' 4 MiB chunks
    (64 slots at MSS 64 KiB) and each port's 2 MiB receive area landed on the heap, reused pages
    scrypt had dirtied and stayed resident once freed: ~4.3 MiB per encrypted pair once idle.
    They are mappings of their own now (udt/_pages.pxd)."""
    options = {udt.UDT_PASSPHRASE: "memory test passphrase"}
    payload = os.urandom(4 * MB)
    server = udt.create_server((LOOP4, 0), backlog=128, options=options)
    server.settimeout(30)
    pairs = []
    before = rss()
    try:
        for _ in range(100):
            client = udt.create_connection(server.getsockname(), timeout=30, options=options)
            pairs.append(client)
            pairs.append(server.accept()[0])
        connected = rss() - before
        for client, conn in zip(pairs[::2], pairs[1::2]):
            assert send_and_receive(client, conn, payload, 30) == payload
        assert pairs[0].perfmon()["mss"] > 9000  # the chunks are the big ones
        time.sleep(3)  # the idle release
        idle = rss() - before
        print(
            f"\nRSS: 100 encrypted pairs, connected {connected / MB:.0f} MiB, idle after 4 MiB each {idle / MB:.0f} MiB"
        )
        assert idle < 250 * MB  # ~145 MiB measured (~434 MiB with the chunks on the heap)
    finally:
        _abort_all(pairs)
        server.close()
