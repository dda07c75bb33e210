"""The direct send path (``send_now`` in ``udt/_muxcore.pyx``): a user thread after its write,
and the receive worker after feeding the engine, send what is due now themselves instead of
handing it to the send worker.  Real sockets on loopback, with and without encryption: the
hand-off really disappears (the multiplexer's counters), the wire order holds when user
threads, the receive worker and the send worker all send on one connection, and data stays
intact through loss.  Timing lives in bench/bench_latency.py, never here.
"""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

import udt
from loopback_pair import connected_pair
from udt.tools.impair import Impairment, Relay

LOOP = "127.0.0.1"
SECRET = {udt.UDT_PASSPHRASE: "correct horse battery staple"}
MODES = {"plain": {}, "sealed": SECRET}


def _echo(conn: udt.socket, size: int, count: int, failures: list[BaseException]) -> None:
    """Send back count messages of size bytes each (a stream: reassembled here)."""
    try:
        buf = bytearray(size)
        view = memoryview(buf)
        for _ in range(count):
            got = 0
            while got < size:
                n = conn.recv_into(view[got:])
                if not n:
                    raise EOFError(f"EOF after {got} of {size} bytes")
                got += n
            conn.sendall(buf)
    except BaseException as exc:  # noqa: BLE001 - reported by the test thread
        failures.append(exc)


def _pingpong(client: udt.socket, sizes: list[int], seed: int) -> None:
    """Round trips of distinct payloads, each answer compared with its request."""
    rng = hashlib.sha256(seed.to_bytes(4, "little"))
    for i, size in enumerate(sizes):
        rng.update(i.to_bytes(4, "little"))
        payload = (rng.digest() * (size // 32 + 1))[:size]
        client.sendall(payload)
        answer = bytearray(size)
        view = memoryview(answer)
        got = 0
        while got < size:
            n = client.recv_into(view[got:])
            assert n, f"EOF in round trip {i}"
            got += n
        assert answer == payload, f"round trip {i} came back altered"


def _run_pingpong(options: dict, sizes: list[int], *, via=None, seed: int = 1) -> tuple[dict, dict]:
    """Ping-pong sizes[i]-byte messages (all of one size per run) through an echo server; the
    client's perfmon before and after."""
    assert len(set(sizes)) == 1
    failures: list[BaseException] = []
    with connected_pair(options, via=via) as (client, conn):
        client.settimeout(30)
        conn.settimeout(30)
        echo = threading.Thread(target=_echo, args=(conn, sizes[0], len(sizes), failures))
        echo.start()
        try:
            before = client.perfmon()
            _pingpong(client, sizes, seed)
            after = client.perfmon()
        finally:
            echo.join(30)
        assert not echo.is_alive(), "the echo hung"
    assert not failures, failures
    return before, after


@pytest.mark.parametrize("mode", sorted(MODES))
def test_pingpong_needs_no_send_worker(mode):
    rounds = 300
    before, after = _run_pingpong(MODES[mode], [64] * rounds)
    # through the send worker each round trip woke it about twice (data, then the ACK2); now
    # the writer sends the data and the receive worker the ACK and the ACK2
    assert after["mux_send_wakeups"] - before["mux_send_wakeups"] < rounds // 10
    assert after["mux_datagrams_out"] - before["mux_datagrams_out"] >= rounds
    assert after["pkt_retrans_total"] == 0


def _writer(sock: udt.socket, tag: int, count: int, failures: list[BaseException]) -> None:
    try:
        rng = hashlib.sha256(bytes([tag]))
        for i in range(count):
            # mostly single-packet messages (sent directly), every 16th a 28-packet one (more
            # than a direct sender takes: the send worker's, while the others go direct)
            size = 40_000 if i % 16 == 15 else 1 + (i * 37) % 1400
            rng.update(i.to_bytes(4, "little"))
            body = (rng.digest() * (size // 32 + 1))[:size]
            sock.sendmsg(bytes([tag]) + i.to_bytes(4, "little") + body)
    except BaseException as exc:  # noqa: BLE001 - reported by the test thread
        failures.append(exc)


def _check_messages(conn: udt.socket, writers: int, count: int) -> None:
    """Every writer's messages arrive whole and in its order (message mode, in order)."""
    expected = [0] * writers
    rngs = [hashlib.sha256(bytes([tag])) for tag in range(writers)]
    for _ in range(writers * count):
        message = conn.recvmsg(64 * 1024)
        tag, i, body = message[0], int.from_bytes(message[1:5], "little"), message[5:]
        assert i == expected[tag], f"writer {tag}: message {i} where {expected[tag]} was due"
        expected[tag] += 1
        rngs[tag].update(i.to_bytes(4, "little"))
        assert body == (rngs[tag].digest() * (len(body) // 32 + 1))[: len(body)], f"writer {tag} message {i}"


def _concurrent_writers(options: dict, *, via=None, count: int = 160) -> tuple[dict, dict]:
    """Three threads writing messages on one connection while its receive worker answers the
    peer's ACKs: returns the receiver's and the sender's perfmon."""
    options = {**options, udt.UDT_SNDSYN: True}
    failures: list[BaseException] = []
    with connected_pair(options, via=via, type=udt.SOCK_DGRAM) as (client, conn):
        client.settimeout(60)
        conn.settimeout(60)
        writers = [
            threading.Thread(target=_writer, args=(client, tag, count, failures), name=f"udt-test-w{tag}")
            for tag in range(3)
        ]
        for w in writers:
            w.start()
        try:
            _check_messages(conn, len(writers), count)
        finally:
            for w in writers:
                w.join(60)
        assert not failures, failures
        client.flush(timeout=30)
        return conn.perfmon(), client.perfmon()


@pytest.mark.parametrize("mode", sorted(MODES))
def test_wire_order_holds_with_every_thread_sending(mode):
    received, sent = _concurrent_writers(MODES[mode])
    # loopback keeps the order of the sendmsg calls: a gap in the sequence numbers the receiver
    # saw (a loss it reported) could only be two senders' bursts crossing on the wire
    assert received["pkt_rcv_loss_total"] == 0
    assert received["pkt_sent_nak_total"] == 0
    if mode == "sealed":
        assert received["encrypted"]
        assert received["pkt_rcv_replayed"] == 0 and received["pkt_rcv_forged"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(MODES))
def test_direct_sends_recover_from_loss(mode):
    lossy = Impairment(loss=0.03, reorder=0.01)

    def relay(target):
        return Relay(target, a_to_b=lossy, b_to_a=lossy, seed=7)

    # multi-packet round trips: the receive worker answers NAKs with retransmissions itself
    _, after = _run_pingpong(MODES[mode], [6000] * 80, via=relay, seed=3)
    assert after["pkt_retrans_total"] > 0
    received, sent = _concurrent_writers(MODES[mode], via=relay, count=60)
    assert sent["pkt_retrans_total"] > 0 and received["pkt_rcv_loss_total"] > 0


def test_bulk_stream_stays_intact():
    """A bulk sendall (the send worker's stream, with direct bursts at its start) next to
    small writes, sha256 compared."""
    payload = os.urandom(4 << 20)
    with connected_pair() as (client, conn):
        conn.settimeout(30)
        client.settimeout(30)
        got = bytearray()
        done = threading.Event()

        def read():
            while len(got) < len(payload) + 3 * 100:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                got.extend(chunk)
            done.set()

        reader = threading.Thread(target=read, name="udt-test-reader")
        reader.start()
        for i in range(100):
            client.sendall(b"%03d" % i)
        client.sendall(payload)
        reader.join(60)
        assert done.is_set()
    expected = b"".join(b"%03d" % i for i in range(100)) + payload
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(expected).hexdigest()
