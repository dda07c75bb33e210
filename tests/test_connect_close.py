"""A completed handshake is a connection (the accept-and-close race), and close()/flush() never
report success for data the peer did not acknowledge."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time

import pytest

import udt

LOOP4 = "127.0.0.1"


def _accept_and_close_server():
    """A server that accepts and closes at once (a busy server refusing work, a health check)."""
    server = udt.create_server((LOOP4, 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, name="accept-and-close")
    thread.start()
    return server, stop, thread


def _connect_and_read_eof(address, count: int, failures: list) -> None:
    for _ in range(count):
        try:
            sock = udt.create_connection(address, timeout=5)
        except OSError as exc:  # the race: a connection the server accepted reported as failed
            failures.append(exc)
            continue
        with sock:
            data = sock.recv(10)
            if data != b"":
                failures.append(AssertionError(f"expected EOF, read {data!r}"))


def _run_against_accept_and_close(threads: int, per_thread: int) -> list:
    server, stop, serving = _accept_and_close_server()
    failures: list = []
    try:
        workers = [
            threading.Thread(target=_connect_and_read_eof, args=(server.getsockname(), per_thread, failures))
            for _ in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
    finally:
        stop.set()
        serving.join(5)
        server.close()
    return failures


def test_connects_to_an_accept_and_close_server_then_read_eof():
    """300 sequential connects: every one connects and reads EOF (52 of 300 raised UDT 1000
    when the server's SHUTDOWN arrived before the connecting thread woke)."""
    assert _run_against_accept_and_close(1, 300) == []


@pytest.mark.slow
def test_connect_race_under_load():
    """4 threads connecting at once (6 of 100 failed under load)."""
    assert _run_against_accept_and_close(4, 50) == []


# ---------------------------------------------------------------------------------------------
# close() and flush(): no silent loss
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def relayed_pair(options=None, **impairments):
    """(client, accepted, relay): the client reaches the server through the impairment relay."""
    from udt.tools.impair import Relay

    server = udt.create_server((LOOP4, 0), options=options)
    try:
        with Relay(server.getsockname(), process=True, **impairments) as relay:
            client = udt.create_connection(relay.address, timeout=5, options=options)
            server.settimeout(5)
            conn, _ = server.accept()
            try:
                yield client, conn, relay
            finally:
                for sock in (client, conn):
                    with contextlib.suppress(OSError):
                        sock.setsockopt(udt.UDT_LINGER, 0)
                    with contextlib.suppress(OSError):
                        sock.close()
    finally:
        server.close()


def _cut(relay, *directions: str) -> None:
    from udt.tools.impair import Impairment

    for direction in directions:
        relay.set_impairment(direction, Impairment.cut())


def test_close_raises_for_data_the_silent_peer_never_acknowledged():
    """3 MB queued and the peer gone silent: close() gives up after the linger time with an
    error naming the bytes lost (it returned normally after 3 s before), and the socket is gone."""
    with relayed_pair() as (client, conn, relay):
        client.sendall(b"hello")
        assert conn.recv(5) == b"hello"
        _cut(relay, "a_to_b")  # nothing reaches the peer now; its keep-alives are no progress
        client.sendall(os.urandom(3 << 20))
        client.setsockopt(udt.UDT_LINGER, 1)
        started = time.monotonic()
        with pytest.raises(udt.UnacknowledgedDataError) as info:
            client.close()
        elapsed = time.monotonic() - started
        assert 0.8 < elapsed < 3.0, elapsed
        assert info.value.errno == errno.EWOULDBLOCK
        assert 0 < info.value.unacknowledged <= 3 << 20
        assert f"{info.value.unacknowledged} bytes" in str(info.value)
        assert client._mux is None  # released all the same: no leak (the autouse fixture checks)
        client.close()  # a second close is a no-op


def test_flush_waits_until_everything_is_acknowledged():
    with relayed_pair() as (client, conn, relay):
        payload = os.urandom(4 << 20)
        received = bytearray()

        def read() -> None:
            while len(received) < len(payload):
                received.extend(conn.recv(1 << 20))

        reader = threading.Thread(target=read)
        reader.start()
        client.sendall(payload)
        client.flush()
        assert client.getsockopt(udt.UDT_SNDDATA) == 0
        reader.join(10)
        assert bytes(received) == payload
        client.flush(timeout=0)  # nothing unacknowledged: returns at once
        _cut(relay, "a_to_b")
        client.sendall(b"x" * 100_000)
        started = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            client.flush(timeout=0.3)
        assert 0.25 < time.monotonic() - started < 2.0
        assert info.value.unacknowledged == 100_000


def test_a_broken_connection_fails_flush_sendall_and_close_with_the_count():
    options = {udt.UDT_PEERIDLETIMEO: 1000}
    with relayed_pair(options) as (client, conn, relay):
        client.sendall(b"ready")
        assert conn.recv(5) == b"ready"
        client.flush(timeout=5)  # its ACK must not still be in flight when the link is cut
        _cut(relay, "a_to_b", "b_to_a")
        client.sendall(b"y" * 200_000)
        started = time.monotonic()
        with pytest.raises(ConnectionResetError) as info:
            client.flush()  # no timeout: the idle timeout ends it, never a hang
        assert time.monotonic() - started < 4.0
        assert info.value.unacknowledged == 200_000
        with pytest.raises(BrokenPipeError) as info:
            client.sendall(b"z" * 1000)
        assert info.value.unacknowledged == 201_000 or info.value.unacknowledged == 200_000
        with pytest.raises(ConnectionResetError) as info:
            client.close()
        assert info.value.unacknowledged >= 200_000
        assert "not acknowledged" in str(info.value)


def test_linger_zero_still_aborts_without_an_error():
    with relayed_pair() as (client, conn, relay):
        _cut(relay, "a_to_b")
        client.sendall(b"w" * 500_000)
        client.setsockopt(udt.UDT_LINGER, 0)
        client.close()


def test_a_slow_but_live_path_outlasts_the_linger_time():
    """The linger bounds a stall, not the drain: 1.5 MB through a 4 Mbit/s link takes ~3 s,
    three times the linger, and close() still returns once every byte is acknowledged."""
    with relayed_pair(a_to_b=_rate(4_000_000)) as (client, conn, relay):
        payload = os.urandom(1_500_000)
        received = bytearray()

        def read() -> None:
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    return
                received.extend(data)

        reader = threading.Thread(target=read)
        reader.start()
        client.sendall(payload)
        client.setsockopt(udt.UDT_LINGER, 1)
        started = time.monotonic()
        client.close()
        assert time.monotonic() - started > 1.5
        reader.join(10)
        assert bytes(received) == payload


def _rate(bits_per_second: int):
    from udt.tools.impair import Impairment

    return Impairment(rate=bits_per_second, queue_packets=200)


@pytest.mark.slow
def test_a_transfer_whose_impaired_link_dies_is_never_reported_done():
    """16 MiB through 3 % loss and 10 ± 5 ms each way, then the link goes dead: sendall() or
    close() raises with the unacknowledged count, and the server's read fails, never EOF."""
    from udt.tools.impair import Impairment

    path = Impairment(delay=0.010, jitter=0.005, loss=0.03)
    options = {udt.UDT_PEERIDLETIMEO: 2000}
    with relayed_pair(options, a_to_b=path, b_to_a=path, seed=9) as (client, conn, relay):
        payload = os.urandom(16 << 20)
        got = {"bytes": 0}

        def read() -> None:
            try:
                while True:
                    data = conn.recv(1 << 20)
                    if not data:
                        got["eof"] = True
                        return
                    got["bytes"] += len(data)
                    if got["bytes"] >= 4 << 20 and "cut" not in got:
                        got["cut"] = True
                        _cut(relay, "a_to_b", "b_to_a")
            except OSError as exc:
                got["error"] = exc

        reader = threading.Thread(target=read)
        reader.start()
        with pytest.raises(OSError) as info:
            client.sendall(payload)
            client.close()
        assert info.value.unacknowledged > 0
        assert info.value.unacknowledged >= len(payload) - got["bytes"]
        reader.join(10)
        assert isinstance(got.get("error"), ConnectionResetError), got
        assert "eof" not in got
