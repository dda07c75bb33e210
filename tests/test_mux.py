"""The multiplexer: port sharing, many connections on one port, idle cost of the workers."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

import udt
from udt import _pool

LOOP4 = "127.0.0.1"


def mux_of(sock):
    return sock._mux


def test_sockets_binding_one_address_share_a_multiplexer():
    with udt.create_server((LOOP4, 0)) as server:
        with udt.socket() as other:
            other.bind(server.getsockname())
            assert mux_of(other) is mux_of(server)
        with udt.socket() as separate:
            separate.setsockopt(udt.UDT_REUSEADDR, False)
            with pytest.raises(OSError):
                separate.bind(server.getsockname())  # no sharing asked: the kernel refuses


def test_multiplexer_stops_with_its_last_socket():
    server = udt.create_server((LOOP4, 0))
    mux = mux_of(server)
    # the port is served by a pair of the process-wide pool (udt/_pool.pyx), started for it
    threads = [t for t in threading.enumerate() if t.name.startswith("udt-pool-")]
    assert len(threads) == 2
    client = udt.create_connection(server.getsockname(), timeout=5)
    conn, _ = server.accept()
    server.close()  # the accepted socket still holds the multiplexer
    assert not mux.closed
    client.sendall(b"still here")
    assert conn.recv(100) == b"still here"
    conn.close()
    client.close()
    assert mux.closed
    for t in threads:
        t.join(5)
        assert not t.is_alive()


def test_idle_connection_costs_no_wakeups():
    """UDT4 wakes ~119 times a second per idle socket; here only the keep-alive timers run."""
    with udt.create_server((LOOP4, 0)) as server:
        with udt.create_connection(server.getsockname(), timeout=5) as client:
            conn, _ = server.accept()
            with conn:
                client.sendall(b"x" * 100_000)
                assert len(conn.recv(200_000)) > 0
                time.sleep(0.5)  # let ACK/ACK2 traffic settle
                muxes = {id(mux_of(s)): mux_of(s) for s in (client, conn)}.values()
                before = [m.stats() for m in muxes]
                pool_before = _pool.wakeups()
                time.sleep(1.0)
                after = [m.stats() for m in muxes]
                pool = _pool.wakeups() - pool_before
                receive = sum(a["mux_receive_wakeups"] - b["mux_receive_wakeups"] for a, b in zip(after, before))
                send = sum(a["mux_send_wakeups"] - b["mux_send_wakeups"] for a, b in zip(after, before))
                print(f"\nworker wake-ups over one idle second (both ends): receive {receive}, send {send}")
                assert send <= 6, f"send workers woke {send} times on an idle link"
                # every return of the pool's workers, also those no port was charged for (an
                # event left undrained would make the receive worker spin)
                assert pool <= 20, f"the pool's workers woke {pool} times in an idle second"
                # the receive worker sleeps until the engine's next timer (conn_next_timer): an idle
                # connection must not ask for the 10 ms ACK timer
                assert receive <= 8, (
                    f"receive workers woke {receive} times in an idle second: "
                    "the engine's next timer keeps the 10 ms ACK tick while idle"
                )


@pytest.mark.slow
def test_hundred_concurrent_connections_on_one_port():
    count = 100
    small = {udt.UDT_SNDBUF: 256 * 1456, udt.UDT_RCVBUF: 256 * 1456}
    server = udt.create_server((LOOP4, 0), backlog=count, options=small)
    server.settimeout(20)
    accepted = []
    errors = []

    def serve():
        try:
            for _ in range(count):
                conn, _ = server.accept()
                accepted.append(conn)
                conn.settimeout(30)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    acceptor = threading.Thread(target=serve)
    acceptor.start()
    clients = []
    try:
        client_port = None
        for _ in range(count):
            c = udt.socket()
            for option, value in small.items():
                c.setsockopt(option, value)
            c.settimeout(20)
            c.bind((LOOP4, client_port or 0))  # all clients share one port too
            client_port = c.getsockname()[1]
            c.connect(server.getsockname())
            clients.append(c)
        acceptor.join(30)
        assert not errors, errors
        assert len(accepted) == count
        assert len({mux_of(c) for c in clients}) == 1
        assert len({mux_of(c) for c in accepted}) == 1
        # every connection carries its own data, all at once
        blobs = [os.urandom(50_000) for _ in range(count)]
        by_peer = {}
        for conn in accepted:
            by_peer[conn.getpeername()] = conn
        assert len(by_peer) == 1  # one client port: the server tells them apart by socket ID
        senders = [threading.Thread(target=c.sendall, args=(blob,)) for c, blob in zip(clients, blobs)]
        for t in senders:
            t.start()
        digests = set()
        for conn in accepted:
            data = b""
            while len(data) < 50_000:
                chunk = conn.recv(100_000)
                assert chunk
                data += chunk
            digests.add(hashlib.sha256(data).digest())
        for t in senders:
            t.join(30)
        assert digests == {hashlib.sha256(b).digest() for b in blobs}
    finally:
        for s in clients + accepted:
            s.setsockopt(udt.UDT_LINGER, 0)
            s.close()
        server.close()
        acceptor.join(5)


def test_garbage_datagrams_are_counted_and_dropped():
    import socket as pysocket
    import struct

    with udt.create_server((LOOP4, 0)) as server:
        with udt.create_connection(server.getsockname(), timeout=5) as client:
            conn, _ = server.accept()
            with conn, pysocket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM) as raw:
                before = mux_of(server).stats()
                target = server.getsockname()
                raw.sendto(b"", target)  # empty
                raw.sendto(b"\x01\x02\x03", target)  # too short
                raw.sendto(os.urandom(7), target)
                raw.sendto(struct.pack("!IIII", 5, 0, 0, 0x1234567) + b"x" * 100, target)  # unknown ID
                raw.sendto(struct.pack("!IIII", 0x80000000, 0, 0, 0) + b"\0" * 10, target)  # short handshake
                raw.sendto(
                    struct.pack("!IIII", 0x80050000, 0, 0, conn.socket_id) + b"\0" * 4, target
                )  # SHUTDOWN from a stranger
                for _ in range(200):
                    raw.sendto(os.urandom(1472), target)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    after = mux_of(server).stats()
                    dropped = sum(
                        after[k] - before[k]
                        for k in after
                        if k.startswith("mux_invalid_")
                        and k
                        in (
                            "mux_invalid_unknown_destination",
                            "mux_invalid_no_listener",
                            "mux_invalid_wrong_source",
                            "mux_invalid_header",
                        )
                    )
                    if dropped >= 200:
                        break
                    time.sleep(0.02)
                assert dropped >= 200, after
                assert after["mux_invalid_wrong_source"] > before["mux_invalid_wrong_source"]
                client.sendall(b"still fine")  # the stranger's SHUTDOWN did not end the connection
                assert conn.recv(100) == b"still fine"


def test_main_thread_wait_is_interruptible():
    import signal

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        with udt.create_server((LOOP4, 0)) as server:
            with udt.create_connection(server.getsockname(), timeout=5) as client:
                conn, _ = server.accept()
                with conn:
                    signal.setitimer(signal.ITIMER_REAL, 0.3)
                    started = time.monotonic()
                    with pytest.raises(Interrupted):
                        conn.recv(10)  # blocks forever without the signal
                    assert time.monotonic() - started < 2.0
                    client.sendall(b"after")  # the socket is still usable
                    assert conn.recv(10) == b"after"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_close_wakes_a_blocked_accept():
    server = udt.create_server((LOOP4, 0))
    result = {}

    def body():
        try:
            server.accept()
        except OSError as exc:
            result["error"] = exc

    thread = threading.Thread(target=body)
    thread.start()
    time.sleep(0.2)
    server.close()
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(result.get("error"), OSError)


def test_interpreter_exits_with_sockets_left_open(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "leave_open.py"
    script.write_text(
        "import udt\n"
        "server = udt.create_server(('127.0.0.1', 0))\n"
        "client = udt.create_connection(server.getsockname(), timeout=5)\n"
        "conn, _ = server.accept()\n"
        "client.sendall(b'x' * 1000000)\n"
        "print('done', flush=True)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "done"
    assert time.monotonic() - started < 15


def _settled_pair(server, byte: bytes):
    """A connection to server that moved one byte and let its ACK/ACK2 exchange settle."""
    client = udt.create_connection(server.getsockname(), timeout=5)
    conn, _ = server.accept()
    client.sendall(byte)
    assert conn.recv(10) == byte
    time.sleep(0.05)
    return client, conn


def test_close_leaves_the_spaced_shutdown_copies_to_the_port_or_sends_them_with_it():
    """close() does not wait out the 10 ms spacing of its four SHUTDOWN copies: on a port that
    stays up (an accepted socket) the send worker sends them after close() returned; a socket
    whose port closes with it sends them in one burst before the port goes."""
    with udt.create_server((LOOP4, 0)) as server:
        client, conn = _settled_pair(server, b"x")
        server_mux = mux_of(conn)
        sent = server_mux.stats()["mux_datagrams_out"]
        conn.close()  # the listener keeps the port: the copies follow, 10 ms apart
        # close() returned before the last copies were due (it used to wait 30 ms for them)
        assert server_mux.stats()["mux_datagrams_out"] - sent < 4
        assert client.recv(10) == b""  # the first SHUTDOWN arrived: EOF
        deadline = time.monotonic() + 2
        while server_mux.stats()["mux_datagrams_out"] - sent < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server_mux.stats()["mux_datagrams_out"] - sent >= 4

    with udt.create_server((LOOP4, 0)) as server:
        client, conn = _settled_pair(server, b"y")
        client_mux = mux_of(client)
        sent = client_mux.stats()["mux_datagrams_out"]
        client.close()  # its private port closes with it
        assert client_mux.closed
        assert client_mux.stats()["mux_datagrams_out"] - sent >= 4  # all four went out first
        assert conn.recv(10) == b""
        conn.close()

    # a port that goes away while a closed connection still owes copies sends them as it stops
    with udt.create_server((LOOP4, 0)) as server:
        client, conn = _settled_pair(server, b"z")
        server_mux = mux_of(conn)
        sent = server_mux.stats()["mux_datagrams_out"]
        conn.close()  # returns before its last copies are due ...
        server.close()  # ... and the port closes with the listener
        assert server_mux.closed
        assert server_mux.stats()["mux_datagrams_out"] - sent >= 4
    assert client.recv(10) == b""
    client.close()
