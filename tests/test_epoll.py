"""udt.epoll and fileno(): readiness of udt sockets on real loopback connections."""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import socket as pysocket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import udt

IN, OUT, ERR, ET = udt.UDT_EPOLL_IN, udt.UDT_EPOLL_OUT, udt.UDT_EPOLL_ERR, udt.UDT_EPOLL_ET


def _eventfds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("anon_inode:[event"):
                count += 1  # [eventfd] and [eventpoll]
    return count


@pytest.fixture(autouse=True)
def no_leaked_eventfds():
    before = _eventfds()
    yield
    assert _eventfds() == before, "an eventfd or epoll fd was left open"


@pytest.fixture
def pair():
    """(server listening, client, accepted) on loopback."""
    server = udt.create_server(("127.0.0.1", 0))
    client = udt.create_connection(server.getsockname())
    accepted, _ = server.accept()
    yield server, client, accepted
    for sock in (accepted, client, server):
        sock.close()


def _readable(ep: udt.epoll, timeout: float = 2.0) -> list:
    return ep.wait(timeout)[0]


def test_data_eof_and_draining(pair):
    _, client, accepted = pair
    with udt.epoll() as ep:
        ep.add_usock(accepted, IN)
        assert ep.wait(0) == ([], [], [], [])
        client.sendall(b"hello")
        assert _readable(ep) == [accepted]
        assert ep.poll(0) == [(accepted, int(IN))]  # level-triggered: still there
        assert accepted.recv(100) == b"hello"
        assert ep.wait(0) == ([], [], [], [])  # drained: not readable any more
        client.close()
        assert _readable(ep) == [accepted]  # EOF
        assert accepted.recv(10) == b""


def test_half_close_eof_is_readable_and_the_reply_writable(pair):
    _, client, accepted = pair
    with udt.epoll() as ep:
        ep.add_usock(accepted, IN)
        client.sendall(b"request")
        client.shutdown(pysocket.SHUT_WR)  # udt to udt: a half-close, the peer may still answer
        assert _readable(ep) == [accepted]
        assert accepted.recv(100) == b"request"
        assert _readable(ep) == [accepted]  # the EOF alone keeps it readable
        assert accepted.recv(100) == b""
        assert ep.poll(0) == [(accepted, int(IN))]  # level-triggered: EOF stays readable
        accepted.sendall(b"reply")
        assert client.recv(100) == b"reply"


def test_pending_accept(pair):
    server, _, _ = pair
    with udt.epoll() as ep:
        ep.add_usock(server)  # IN | OUT | ERR by default: a listener is never writable
        assert ep.wait(0) == ([], [], [], [])
        other = udt.create_connection(server.getsockname())
        try:
            assert _readable(ep) == [server]
            conn, _ = server.accept()
            conn.close()
            assert ep.wait(0) == ([], [], [], [])
        finally:
            other.close()


def test_broken_connection_is_err_and_readable(pair):
    _, client, accepted = pair
    client.sendall(b"first")
    assert select.select([accepted], [], [], 2)[0] == [accepted]  # readable before the error
    with udt.epoll() as ep:
        ep.add_usock(accepted, ERR)  # ERR alone: its rising edge still wakes the wait
        assert ep.poll(0) == []
        client.setsockopt(udt.UDT_LINGER, 0)
        client.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                client.send(b"x" * 65536)
        client.close()  # drops queued data: the peer is told, its connection is reset
        deadline = time.monotonic() + 3
        while ep.poll(0.5) != [(accepted, int(ERR))]:
            assert time.monotonic() < deadline
        assert accepted._readiness() == IN | OUT | ERR
        with pytest.raises(ConnectionResetError):
            while accepted.recv(1 << 20):
                pass


def test_connect_timeout_is_err_and_writable():
    # a peer that takes the datagrams and never answers: no ICMP, so only the timeout ends it
    with pysocket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM) as silent, udt.socket() as sock, udt.epoll() as ep:
        silent.bind(("127.0.0.1", 0))
        sock.setsockopt(udt.UDT_CONNTIMEO, 200)
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.connect(silent.getsockname())
        ep.add_usock(sock, OUT | ERR)
        assert ep.poll(0) == []
        started = time.monotonic()
        assert ep.poll(3) == [(sock, int(OUT | ERR))]
        assert time.monotonic() - started < 2
        with pytest.raises(TimeoutError):
            sock.recv(1)
        assert ep.poll(0) == []  # the failed attempt left the poller


def test_connect_refused_is_err_and_writable():
    # nothing listens on the port: the kernel's ICMP port-unreachable ends the attempt at once
    with pysocket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()
    with udt.socket() as sock, udt.epoll() as ep:
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.connect(closed_port)
        ep.add_usock(sock, OUT | ERR)
        assert ep.poll(3) == [(sock, int(OUT | ERR))]
        with pytest.raises(ConnectionRefusedError):
            sock.recv(1)
        assert ep.poll(0) == []


def test_nonblocking_connect_becomes_writable():
    with udt.create_server(("127.0.0.1", 0)) as server, udt.socket() as sock, udt.epoll() as ep:
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.connect(server.getsockname())
        ep.add_usock(sock, OUT)
        assert ep.wait(3)[1] == [sock]
        sock.sendall(b"ok")  # connected: the first call finishes the connect
        conn, _ = server.accept()
        with conn:
            assert conn.recv(2) == b"ok"


def test_writable_follows_send_buffer_space(pair):
    _, client, accepted = pair
    with udt.epoll() as ep:
        ep.add_usock(client, OUT)
        assert ep.wait(0)[1] == [client]
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            while True:
                client.send(b"x" * 65536)
        assert ep.wait(0)[1] == []  # full: a send would block
        accepted.settimeout(0.05)
        deadline = time.monotonic() + 5
        while ep.wait(0.05)[1] != [client]:  # acknowledgements free room, reading more
            assert time.monotonic() < deadline
            with contextlib.suppress(TimeoutError):
                accepted.recv(1 << 20)
        assert client.send(b"y") == 1


def test_edge_triggered_reports_each_rising_edge_once(pair):
    _, client, accepted = pair
    with udt.epoll() as ep:
        ep.add_usock(accepted, IN | ET)
        client.sendall(b"a")
        assert _readable(ep) == [accepted]
        assert ep.wait(0.1)[0] == []  # still readable, but no new edge
        assert accepted.recv(10) == b"a"
        client.sendall(b"b")
        assert _readable(ep) == [accepted]
        ep.modify_usock(accepted, IN)  # back to level-triggered: reported while readable
        assert _readable(ep) == [accepted]
        assert _readable(ep) == [accepted]


def test_timeout_returns_empty_lists(pair):
    _, _, accepted = pair
    with udt.epoll() as ep:
        ep.add_usock(accepted, IN)
        started = time.monotonic()
        assert ep.wait(0.2) == ([], [], [], [])
        assert 0.18 <= time.monotonic() - started < 1.5
        assert ep.poll(0.0) == []


def test_wakes_promptly_when_another_thread_sends(pair):
    _, client, accepted = pair
    with udt.epoll() as ep:
        ep.add_usock(accepted, IN)
        timer = threading.Timer(0.2, client.sendall, (b"x",))
        started = time.monotonic()
        timer.start()
        assert _readable(ep, 5.0) == [accepted]
        assert time.monotonic() - started < 1.0
        timer.join()


def test_closing_a_socket_inside_a_wait(pair):
    _, client, accepted = pair
    with udt.epoll() as ep:
        ep.add_usock(accepted, IN)  # (the client reads EOF once it is closed)
        results = []
        waiter = threading.Thread(target=lambda: results.append(ep.wait(0.6)))
        waiter.start()
        time.sleep(0.1)
        accepted.close()  # leaves the poller; the waiter keeps waiting for the rest
        waiter.join()
        assert results == [([], [], [], [])]
        # a new socket may reuse the closed one's eventfd number: never reported for it
        with udt.create_connection(pair[0].getsockname()) as other:
            other.fileno()
            assert ep.wait(0.1) == ([], [], [], [])


def test_removal_and_misuse(pair):
    _, client, accepted = pair
    with udt.epoll() as ep:
        ep.add_usock(accepted, IN)
        with pytest.raises(FileExistsError):
            ep.add_usock(accepted, IN)
        with pytest.raises(ValueError):
            ep.add_usock(client, 0)
        with pytest.raises(FileNotFoundError):
            ep.modify_usock(client, IN)
        client.sendall(b"x")
        assert _readable(ep) == [accepted]
        ep.remove_usock(accepted)
        ep.remove_usock(accepted)  # absent: ignored, as in UDT4
        assert ep.wait(0) == ([], [], [], [])
        with pytest.raises(OSError):
            udt.socket().fileno()  # nothing to be ready for before connect/listen
    with pytest.raises(ValueError):
        ep.wait(0)


def test_os_socket_beside_udt_sockets(pair):
    _, client, accepted = pair
    left, right = pysocket.socketpair()
    with left, right, udt.epoll() as ep:
        ep.add_usock(accepted, IN)
        ep.add_ssock(left, IN)
        ep.add_ssock(right.fileno(), OUT)
        assert ep.wait(0) == ([], [], [], [right.fileno()])
        right.send(b"x")
        client.sendall(b"y")
        deadline = time.monotonic() + 3
        while len(_readable(ep)) == 0:
            assert time.monotonic() < deadline
        r, _, sr, sw = ep.wait(0)
        assert r == [accepted] and sr == [left.fileno()] and sw == [right.fileno()]
        ep.remove_ssock(left)
        ep.remove_ssock(right)
        assert ep.wait(0) == ([accepted], [], [], [])


def test_fileno_with_select_and_selectors(pair):
    server, client, accepted = pair
    fd = accepted.fileno()
    assert fd == accepted.fileno() and fd >= 0
    assert select.select([accepted], [], [], 0) == ([], [], [])
    client.sendall(b"z")
    assert select.select([accepted], [], [], 2)[0] == [accepted]
    accepted.recv(1)
    assert select.select([fd], [], [], 0)[0] == []
    with selectors.DefaultSelector() as sel:
        sel.register(server, selectors.EVENT_READ, "listener")
        assert sel.select(0) == []
        with udt.create_connection(server.getsockname()):
            assert [key.data for key, _ in sel.select(2)] == ["listener"]
            server.accept()[0].close()


def test_epoll_fileno_is_readable_when_poll_has_something(pair):
    _, client, accepted = pair
    with udt.epoll() as ep:
        ep.add_usock(accepted, IN)
        assert select.select([ep.fileno()], [], [], 0)[0] == []
        client.sendall(b"q")
        assert select.select([ep.fileno()], [], [], 2)[0] == [ep.fileno()]
        assert ep.poll(0) == [(accepted, int(IN))]


def test_nonblocking_calls_raise_blocking_io_error(pair):
    server, _, accepted = pair
    accepted.setblocking(False)
    server.setblocking(False)
    with pytest.raises(BlockingIOError):
        accepted.recv(10)
    with pytest.raises(BlockingIOError):
        server.accept()


def test_a_thousand_sockets_in_one_poller():
    """500 connections, both ends in one poller, served by one thread; one port per side."""
    count = 500
    server = udt.create_server(("127.0.0.1", 0), backlog=count)
    clients, accepted = [], []
    try:
        for _ in range(count):
            sock = udt.socket()
            sock.setsockopt(udt.UDT_REUSEADDR, True)
            sock.bind(("127.0.0.1", clients[0].getsockname()[1] if clients else 0))
            sock.connect(server.getsockname())
            clients.append(sock)
            accepted.append(server.accept()[0])
        with udt.epoll() as ep:
            for sock in clients + accepted:
                ep.add_usock(sock, IN)
            assert ep.wait(0) == ([], [], [], [])
            for sock in clients:
                sock.sendall(b"ping")
            servers, pinged, answered = set(accepted), set(), set()
            deadline = time.monotonic() + 10
            while len(answered) < count:
                assert time.monotonic() < deadline
                for sock in ep.wait(1.0)[0]:
                    if sock in servers:
                        assert sock.recv(16) == b"ping" and sock not in pinged
                        sock.sendall(b"pong")
                        pinged.add(sock)
                    else:
                        assert sock.recv(16) == b"pong" and sock not in answered
                        answered.add(sock)
            assert pinged == servers and answered == set(clients)
    finally:
        # each close waits a few ms to see its SHUTDOWN copies out: close them side by side
        with ThreadPoolExecutor(50) as pool:
            list(pool.map(udt.socket.close, clients + accepted))
        server.close()
