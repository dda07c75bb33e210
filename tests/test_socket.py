"""udt.socket over real loopback sockets: connect/accept, stream and message data, timeouts,
errors, close/linger/shutdown, options, perfmon, files, bind_socket, rendezvous."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket as pysocket
import threading
import time

import pytest

import udt

LOOP4 = "127.0.0.1"
LOOP6 = "::1"


def _has_ipv6() -> bool:
    try:
        with pysocket.socket(pysocket.AF_INET6, pysocket.SOCK_DGRAM) as s:
            s.bind((LOOP6, 0))
        return True
    except OSError:
        return False


@contextlib.contextmanager
def connected_pair(family=udt.AF_INET, kind=udt.SOCK_STREAM, options=None, timeout=10):
    """(client, accepted) over loopback; everything closed afterwards."""
    host = LOOP4 if family == udt.AF_INET else LOOP6
    server = udt.create_server((host, 0), family=family, type=kind, options=options)
    client = accepted = None
    try:
        server.settimeout(timeout)
        client = udt.create_connection(server.getsockname()[:2], timeout=timeout, type=kind, options=options)
        accepted, _ = server.accept()
        accepted.settimeout(timeout)
        yield client, accepted
    finally:
        for sock in (client, accepted, server):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(udt.UDT_LINGER, 0)  # tests that care about linger close first
                sock.close()


def run_thread(target, *args):
    """Start target in a thread; returns (thread, result dict with 'value' or 'error')."""
    result: dict = {}

    def body():
        try:
            result["value"] = target(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result["error"] = exc

    thread = threading.Thread(target=body, name="udt-test-helper")
    thread.start()
    return thread, result


def recv_exactly(sock, count: int) -> bytes:
    chunks = []
    while count:
        data = sock.recv(min(count, 1 << 20))
        if not data:
            break
        chunks.append(data)
        count -= len(data)
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# the module surface
# ---------------------------------------------------------------------------------------------


def test_public_names():
    for name in (
        "socket",
        "create_connection",
        "create_server",
        "AF_INET",
        "AF_INET6",
        "SOCK_STREAM",
        "SOCK_DGRAM",
        "SHUT_RD",
        "SHUT_WR",
        "SHUT_RDWR",
        "__version__",
    ):
        assert hasattr(udt, name), name
    for option in udt.SocketOption:
        assert getattr(udt, option.name) == option
    for name in (
        "UDT_MSS",
        "UDT_SNDSYN",
        "UDT_RCVSYN",
        "UDT_CC",
        "UDT_FC",
        "UDT_SNDBUF",
        "UDT_RCVBUF",
        "UDT_LINGER",
        "UDP_SNDBUF",
        "UDP_RCVBUF",
        "UDT_MAXMSG",
        "UDT_MSGTTL",
        "UDT_RENDEZVOUS",
        "UDT_SNDTIMEO",
        "UDT_RCVTIMEO",
        "UDT_REUSEADDR",
        "UDT_MAXBW",
        "UDT_STATE",
        "UDT_EVENT",
        "UDT_SNDDATA",
        "UDT_RCVDATA",
    ):
        assert hasattr(udt, name), name
    assert udt.UDT_MSS == 0 and udt.UDT_RCVDATA == 20  # UDT4's numbering


def test_error_classes_are_precise_oserrors():
    assert issubclass(udt.ConnectionRejectedError, ConnectionRefusedError)
    assert issubclass(udt.ConnectTimeoutError, TimeoutError)
    assert issubclass(udt.ConnectionBrokenError, ConnectionResetError)
    assert issubclass(udt.BrokenPipeUDTError, BrokenPipeError)
    assert issubclass(udt.WouldBlockError, BlockingIOError)
    assert issubclass(udt.InvalidParameterError, ValueError)
    assert issubclass(udt.InvalidParameterError, OSError)
    err = udt.errors.error_from_code(1002)
    assert isinstance(err, ConnectionRefusedError) and err.udt_code == 1002
    assert err.errno == errno.ECONNREFUSED
    assert udt.errors.error_from_code(5011).errno == errno.EADDRINUSE


def test_socket_arguments_are_checked():
    with pytest.raises(ValueError):
        udt.socket(pysocket.AF_UNIX)
    with pytest.raises(ValueError):
        udt.socket(udt.AF_INET, pysocket.SOCK_RAW)
    with udt.socket() as s:
        assert s.family == udt.AF_INET and s.type == udt.SOCK_STREAM
        assert "INIT" in repr(s)
        with pytest.raises(OSError):
            s.fileno()
        with pytest.raises(OSError) as info:
            s.getpeername()
        assert info.value.errno == errno.ENOTCONN
        with pytest.raises(OSError):
            s.recv(10)
        with pytest.raises(OSError) as info:
            s.listen()  # UDT4: listen needs bind (5005)
        assert info.value.udt_code == 5005
        with pytest.raises(ValueError):
            s.settimeout(-1)
    with pytest.raises(OSError) as info:
        s.recv(1)
    assert info.value.errno == errno.EBADF
    s.close()  # idempotent


# ---------------------------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------------------------


def test_option_defaults_and_validation():
    with udt.socket() as s:
        assert s.getsockopt(udt.UDT_MSS) == 1500
        assert s.getsockopt(udt.UDT_FC) == 65536  # caps the buffers grow to (engine.md)
        assert s.getsockopt(udt.UDT_SNDSYN) is True and s.getsockopt(udt.UDT_RCVSYN) is True
        assert s.getsockopt(udt.UDT_RENDEZVOUS) is False
        assert s.getsockopt(udt.UDT_REUSEADDR) is True
        assert s.getsockopt(udt.UDT_MAXBW) == -1
        assert s.getsockopt(udt.UDT_SNDTIMEO) == -1 and s.getsockopt(udt.UDT_RCVTIMEO) == -1
        assert s.getsockopt(udt.UDT_LINGER) == (True, 3)
        assert s.getsockopt(udt.UDT_STATE) == udt.SocketState.INIT
        assert s.getsockopt(udt.UDT_SNDBUF) == 65536 * 1456
        s.setsockopt(udt.UDT_MSS, 9000)
        assert s.getsockopt(udt.UDT_MSS) == 9000
        for option, bad in (
            (udt.UDT_MSS, 75),
            (udt.UDT_MSS, "big"),
            (udt.UDT_FC, 31),
            (udt.UDT_MAXBW, 0),
            (udt.UDT_LINGER, -1),
            (udt.UDT_RCVTIMEO, -5),
            (udt.UDT_SNDSYN, 2),
        ):
            with pytest.raises(ValueError):
                s.setsockopt(option, bad)
        with pytest.raises(ValueError):
            s.setsockopt(udt.UDT_STATE, 1)  # read only
        with pytest.raises(ValueError):
            s.setsockopt(999, 1)
        s.setsockopt(udt.UDT_LINGER, 0)
        assert s.getsockopt(udt.UDT_LINGER) == (True, 0)
        s.setsockopt(udt.UDT_LINGER, (False, 10))
        assert s.getsockopt(udt.UDT_LINGER) == (False, 10)
        s.setsockopt(udt.UDT_RCVTIMEO, 1500)
        assert s.gettimeout() == 1.5
        s.settimeout(0.25)
        assert s.getsockopt(udt.UDT_SNDTIMEO) == 250 and s.getsockopt(udt.UDT_RCVTIMEO) == 250
        s.setblocking(False)
        assert s.getsockopt(udt.UDT_RCVSYN) is False and s.gettimeout() == 0.0
        s.bind((LOOP4, 0))
        with pytest.raises(OSError):
            s.setsockopt(udt.UDP_RCVBUF, 1 << 20)  # before bind only
        assert s.getsockopt(udt.UDP_RCVBUF) > 0
        assert s.getsockopt(udt.UDT_STATE) == udt.SocketState.OPENED


def test_options_fixed_after_connect_and_live_ones_change():
    with connected_pair(options={udt.UDT_MSS: 1400}) as (client, server):
        assert client.getsockopt(udt.UDT_MSS) == 1400
        assert server.getsockopt(udt.UDT_MSS) == 1400  # negotiated: min of both
        with pytest.raises(OSError):
            client.setsockopt(udt.UDT_MSS, 1500)
        with pytest.raises(OSError):
            client.setsockopt(udt.UDT_FC, 1000)
        client.setsockopt(udt.UDT_MAXBW, 10_000_000)
        assert client.getsockopt(udt.UDT_MAXBW) == 10_000_000
        assert client.getsockopt(udt.UDT_STATE) == udt.SocketState.CONNECTED
        assert client.getsockopt(udt.UDT_EVENT) & udt.UDT_EPOLL_OUT
        client.sendall(b"x" * 1000)
        deadline = time.monotonic() + 5
        while server.getsockopt(udt.UDT_RCVDATA) < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.getsockopt(udt.UDT_RCVDATA) == 1000
        assert server.getsockopt(udt.UDT_EVENT) & udt.UDT_EPOLL_IN
        assert server.recv(2000) == b"x" * 1000


# ---------------------------------------------------------------------------------------------
# connecting
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", [udt.AF_INET, udt.AF_INET6], ids=["ipv4", "ipv6"])
def test_connect_accept_and_echo(family):
    if family == udt.AF_INET6 and not _has_ipv6():
        pytest.skip("no IPv6 loopback here")
    with connected_pair(family) as (client, server):
        assert client.getpeername()[:2] == server.getsockname()[:2]
        assert server.getpeername()[1] == client.getsockname()[1]  # client bound the wildcard
        assert client.getsockopt(udt.UDT_STATE) == udt.SocketState.CONNECTED
        assert client.sendall(b"hello udt") is None
        assert recv_exactly(server, 9) == b"hello udt"
        assert server.send(b"and back") == 8
        assert recv_exactly(client, 8) == b"and back"
        buffer = bytearray(16)
        server.send(b"into")
        assert client.recv_into(buffer) == 4 and buffer[:4] == b"into"
        assert "CONNECTED" in repr(client)


def test_connect_without_listener_times_out_quickly():
    with pysocket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM) as silent:
        silent.bind((LOOP4, 0))  # a port that answers nothing
        started = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            udt.create_connection(silent.getsockname(), timeout=10)
        elapsed = time.monotonic() - started
    assert isinstance(info.value, OSError) and info.value.udt_code == 1001
    assert 2.0 < elapsed < 6.0, elapsed


def test_connect_timeout_follows_socket_timeout():
    with pysocket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM) as silent:
        silent.bind((LOOP4, 0))
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            udt.create_connection(silent.getsockname(), timeout=0.5)
        assert time.monotonic() - started < 2.0


def test_type_mismatch_is_refused():
    with udt.create_server((LOOP4, 0), type=udt.SOCK_DGRAM) as server:
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError) as info:
            udt.create_connection(server.getsockname(), timeout=10, type=udt.SOCK_STREAM)
        assert info.value.udt_code == 1002
        assert time.monotonic() - started < 3.0


def test_connect_ex_and_nonblocking_connect():
    with udt.create_server((LOOP4, 0)) as server:
        with udt.socket() as client:
            client.setblocking(False)
            assert client.connect_ex(server.getsockname()) == errno.EINPROGRESS
            server.settimeout(5)
            conn, _ = server.accept()
            with conn:
                deadline = time.monotonic() + 5
                while client.getsockopt(udt.UDT_STATE) != udt.SocketState.CONNECTED:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                client.setblocking(True)
                client.sendall(b"ok")
                assert recv_exactly(conn, 2) == b"ok"
                conn.setsockopt(udt.UDT_LINGER, 0)
            client.setsockopt(udt.UDT_LINGER, 0)


def test_second_listener_on_a_port_is_udt_5011():
    with udt.create_server((LOOP4, 0)) as first:
        with udt.socket() as second:
            second.bind(first.getsockname())  # shares the multiplexer (reuse address)
            with pytest.raises(OSError) as info:
                second.listen()
            assert info.value.udt_code == 5011


def test_restarted_server_rebinds_at_once():
    with udt.create_server((LOOP4, 0)) as server:
        port = server.getsockname()[1]
        client = udt.create_connection((LOOP4, port), timeout=5)
        conn, _ = server.accept()
        client.sendall(b"1")
        assert conn.recv(1) == b"1"
        client.close()
        conn.close()
    with udt.create_server((LOOP4, port)) as again:
        assert again.getsockname()[1] == port
        with udt.create_connection((LOOP4, port), timeout=5) as client:
            conn, _ = again.accept()
            with conn:
                client.sendall(b"2")
                assert conn.recv(1) == b"2"


def test_rendezvous_on_loopback():
    a = udt.socket()
    b = udt.socket()
    try:
        for s in (a, b):
            s.setsockopt(udt.UDT_RENDEZVOUS, True)
            s.bind((LOOP4, 0))
            s.settimeout(10)
        with pytest.raises(OSError) as info:
            a.listen()
        assert info.value.udt_code == 5007
        thread, result = run_thread(a.connect, b.getsockname())
        b.connect(a.getsockname())
        thread.join(15)
        assert "error" not in result, result
        a.sendall(b"from a")
        assert recv_exactly(b, 6) == b"from a"
        b.sendall(b"from b")
        assert recv_exactly(a, 6) == b"from b"
    finally:
        a.close()
        b.close()


def test_rendezvous_needs_bind():
    with udt.socket() as s:
        s.setsockopt(udt.UDT_RENDEZVOUS, True)
        with pytest.raises(OSError) as info:
            s.connect((LOOP4, 9))
        assert info.value.udt_code == 5008


def test_bind_socket_adopts_an_existing_udp_socket():
    udp = pysocket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM)
    udp.bind((LOOP4, 0))
    address = udp.getsockname()
    server = udt.socket()
    try:
        server.bind_socket(udp)
        assert udp.fileno() == -1  # detached: the udt socket owns the descriptor now
        assert server.getsockname() == address
        server.listen(4)
        server.settimeout(5)
        with udt.create_connection(address, timeout=5) as client:
            conn, _ = server.accept()
            with conn:
                client.sendall(b"adopted")
                assert recv_exactly(conn, 7) == b"adopted"
    finally:
        server.close()
    with pytest.raises(ValueError):
        with udt.socket() as s, pysocket.socket(pysocket.AF_INET, pysocket.SOCK_STREAM) as tcp:
            s.bind_socket(tcp)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def test_stream_both_directions_sha256():
    size = 24 << 20
    up = os.urandom(size)
    down = os.urandom(size // 2)
    with connected_pair() as (client, server):
        t1, r1 = run_thread(lambda: hashlib.sha256(recv_exactly(server, size)).hexdigest())
        t2, r2 = run_thread(lambda: hashlib.sha256(recv_exactly(client, size // 2)).hexdigest())
        started = time.monotonic()
        s_thread, s_result = run_thread(server.sendall, down)
        client.sendall(up)
        s_thread.join(60)
        t1.join(60)
        t2.join(60)
        elapsed = time.monotonic() - started
        assert "error" not in s_result, s_result
        assert r1.get("value") == hashlib.sha256(up).hexdigest(), r1
        assert r2.get("value") == hashlib.sha256(down).hexdigest(), r2
        print(f"\nloopback both ways: {(size * 1.5) / elapsed / 1e6:.0f} MB/s")
        stats = client.perfmon()
        assert stats.pkt_sent_total >= size // (client.getsockopt(udt.UDT_MSS) - 44)  # MSS may have grown
        assert stats["pkt_recv_total"] > 0


def test_message_mode_keeps_boundaries():
    sizes = [1, 100, 1456, 1457, 5000, 100_000, 3]
    messages = [os.urandom(n) for n in sizes]
    with connected_pair(kind=udt.SOCK_DGRAM) as (client, server):
        for message in messages:
            assert client.sendmsg(message) == len(message)
        for message in messages:
            assert server.recvmsg(200_000) == message
        client.send(b"via send")
        assert server.recv(100) == b"via send"
        with pytest.raises(OSError) as info:
            client.sendfile(__file__)
        assert info.value.udt_code == 5009
        client.sendmsg(b"0123456789")
        assert server.recvmsg(4) == b"0123"  # truncated; the rest of that message is gone
        client.sendmsg(b"next")
        assert server.recvmsg(100) == b"next"


def test_message_ttl_drops_what_is_late():
    options = {udt.UDT_MAXBW: 200_000}  # 200 kB/s: a 100 kB message takes half a second
    with connected_pair(kind=udt.SOCK_DGRAM, options=options) as (client, server):
        first = b"a" * 100_000
        client.sendmsg(first)
        for i in range(10):
            client.sendmsg(bytes([i]) * 100_000, ttl=0.05)  # cannot all leave within 50 ms
        client.sendmsg(b"last")
        received = []
        while True:
            message = server.recvmsg(200_000)
            received.append(message)
            if message == b"last":
                break
        assert received[0] == first
        assert len(received) < 12  # late messages were dropped …
        for message in received[1:-1]:
            assert len(message) == 100_000 and message == message[:1] * 100_000  # … never cut


def test_stream_mode_rejects_message_calls():
    with connected_pair() as (client, _server):
        with pytest.raises(OSError) as info:
            client.sendmsg(b"x")
        assert info.value.udt_code == 5010


def test_timeouts_and_would_block():
    with connected_pair() as (client, server):
        server.settimeout(0.3)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            server.recv(10)
        assert 0.25 < time.monotonic() - started < 2.0
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.recv(10)
        client.setblocking(False)
        # fill the send buffer until the socket says it would block
        chunk = b"z" * (1 << 20)
        sent = 0
        with pytest.raises(BlockingIOError):
            for _ in range(200):
                sent += client.send(chunk)
        assert sent > 0


def test_accept_timeout_and_nonblocking():
    with udt.create_server((LOOP4, 0)) as server:
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()


# ---------------------------------------------------------------------------------------------
# ending
# ---------------------------------------------------------------------------------------------


def test_shutdown_write_gives_peer_eof():
    with connected_pair() as (client, server):
        payload = os.urandom(300_000)
        client.sendall(payload)
        client.shutdown(udt.SHUT_WR)
        assert recv_exactly(server, len(payload) + 10) == payload
        assert server.recv(10) == b""  # orderly EOF, again and again
        assert server.recv(10) == b""


def test_close_drains_queued_data():
    server = udt.create_server((LOOP4, 0))
    try:
        client = udt.create_connection(server.getsockname(), timeout=5)
        conn, _ = server.accept()
        payload = os.urandom(8 << 20)
        reader, result = run_thread(lambda: hashlib.sha256(recv_exactly(conn, len(payload) + 1)).digest())
        client.sendall(payload)
        client.close()  # returns once drained (linger 3 s), the peer then sees EOF
        reader.join(30)
        assert result.get("value") == hashlib.sha256(payload).digest(), result
        conn.close()
    finally:
        server.close()


def test_linger_zero_aborts_at_once():
    with connected_pair(options={udt.UDT_MAXBW: 1_000_000}) as (client, server):
        client.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            for _ in range(100):
                client.send(b"q" * 1_000_000)
        client.setsockopt(udt.UDT_LINGER, 0)
        started = time.monotonic()
        client.close()
        assert time.monotonic() - started < 0.5
        received = 0
        with pytest.raises(ConnectionResetError) as info:  # data was dropped: no clean EOF
            while True:
                data = server.recv(1 << 20)
                assert data, "a clean EOF after an abort that dropped data"
                received += len(data)
        assert info.value.udt_code == 2001
        assert received < 100_000_000


def test_close_wakes_a_blocked_recv():
    with connected_pair() as (client, server):
        thread, result = run_thread(server.recv, 100)
        time.sleep(0.2)
        assert thread.is_alive()
        started = time.monotonic()
        server.close()
        thread.join(5)
        assert not thread.is_alive()
        assert time.monotonic() - started < 2.0
        assert isinstance(result.get("error"), OSError), result
        assert result["error"].errno == errno.EBADF


def test_peer_close_ends_blocked_recv_with_eof():
    with connected_pair() as (client, server):
        thread, result = run_thread(server.recv, 100)
        time.sleep(0.1)
        client.close()
        thread.join(15)
        assert result.get("value") == b"", result  # nothing was dropped: a clean EOF


# ---------------------------------------------------------------------------------------------
# files, makefile, perfmon
# ---------------------------------------------------------------------------------------------


def test_sendfile_and_recvfile(tmp_path):
    source = tmp_path / "source.bin"
    target = tmp_path / "target.bin"
    content = os.urandom(5 << 20)
    source.write_bytes(content)
    with connected_pair() as (client, server):
        offset, count = 1000, len(content) - 5000
        thread, result = run_thread(server.recvfile, str(target), 0, count)
        assert client.sendfile(str(source), offset, count) == count
        thread.join(60)
        assert result.get("value") == count, result
        assert target.read_bytes() == content[offset : offset + count]
        with open(source, "rb") as f:  # a file object: its position moves past what was sent
            thread, result = run_thread(server.recv, 200)
            assert client.sendfile(f, 10, 100) == 100
            assert f.tell() == 110
            thread.join(10)
        with pytest.raises(ValueError):
            client.sendfile(str(source), -1)
        with pytest.raises(OSError) as info:
            client.sendfile(str(source), len(content) + 1)
        assert info.value.udt_code == 4001
        with pytest.raises(OSError):
            client.sendfile(str(source), 0, len(content) + 1)


def test_makefile_lines():
    with connected_pair() as (client, server):
        writer = client.makefile("wb")
        reader = server.makefile("rb")
        writer.write(b"line one\nline two\n")
        writer.flush()
        assert reader.readline() == b"line one\n"
        assert reader.readline() == b"line two\n"
        writer.close()
        reader.close()


def test_perfmon_fields():
    fields = [
        "ms_timestamp",
        "pkt_sent_total",
        "pkt_recv_total",
        "pkt_snd_loss_total",
        "pkt_rcv_loss_total",
        "pkt_retrans_total",
        "pkt_sent_ack_total",
        "pkt_recv_ack_total",
        "pkt_sent_nak_total",
        "pkt_recv_nak_total",
        "us_snd_duration_total",
        "pkt_sent",
        "pkt_recv",
        "pkt_snd_loss",
        "pkt_rcv_loss",
        "pkt_retrans",
        "pkt_sent_ack",
        "pkt_recv_ack",
        "pkt_sent_nak",
        "pkt_recv_nak",
        "us_snd_duration",
        "mbps_send_rate",
        "mbps_recv_rate",
        "us_pkt_snd_period",
        "pkt_flow_window",
        "pkt_congestion_window",
        "pkt_flight_size",
        "ms_rtt",
        "mbps_bandwidth",
        "byte_avail_snd_buf",
        "byte_avail_rcv_buf",
        "invalid_total",
        "mux_invalid_unknown_destination",
    ]
    with connected_pair() as (client, server):
        client.sendall(os.urandom(2 << 20))
        recv_exactly(server, 2 << 20)
        stats = client.perfmon()
        for name in fields:
            assert name in stats, name
        payload = client.getsockopt(udt.UDT_MSS) - 44  # path-MTU discovery may have grown it
        assert stats.pkt_sent_total >= (2 << 20) // payload
        assert stats.pkt_sent == stats.pkt_sent_total
        cleared = client.perfmon(clear=True)
        assert cleared.pkt_sent_total >= stats.pkt_sent_total
        after = client.perfmon()
        assert after.pkt_sent <= 5 and after.pkt_sent_total >= stats.pkt_sent_total
        assert server.perfmon().pkt_recv_total >= (2 << 20) // payload


def test_python_congestion_control_on_both_ends():
    from udt.cc import CongestionControl

    instances = []

    class Counting(CongestionControl):
        def __init__(self):
            super().__init__()
            self.acks = 0
            self.initialised = False
            instances.append(self)

        def init(self):
            self.initialised = True
            self.period_us = 20.0  # paced, fixed window
            self.cwnd = 1000.0

        def on_ack(self, ack):
            self.acks += 1

    options = {udt.UDT_CC: Counting}
    with connected_pair(options=options) as (client, server):
        assert len(instances) == 2  # one per connection: the client's and the accepted one
        payload = os.urandom(2 << 20)
        client.sendall(payload)
        assert recv_exactly(server, len(payload)) == payload
        server.sendall(b"back")
        assert recv_exactly(client, 4) == b"back"
        assert all(cc.initialised for cc in instances)
        assert sum(cc.acks for cc in instances) > 0
    with pytest.raises(ValueError):
        with udt.socket() as s:
            s.setsockopt(udt.UDT_CC, 42)


def test_silent_peer_breaks_the_connection():
    from udt.tools.impair import Impairment, Relay

    options = {udt.UDT_PEERIDLETIMEO: 1000}
    server = udt.create_server((LOOP4, 0), options=options)
    try:
        with Relay(server.getsockname()) as relay:
            with udt.create_connection(relay.address, timeout=5, options=options) as client:
                server.settimeout(5)
                conn, _ = server.accept()
                with conn:
                    client.sendall(b"before")
                    assert recv_exactly(conn, 6) == b"before"
                    relay.set_impairment("a_to_b", Impairment.cut())  # the client falls silent
                    relay.set_impairment("b_to_a", Impairment.cut())
                    started = time.monotonic()
                    with pytest.raises(ConnectionResetError) as info:
                        conn.recv(10)
                    assert info.value.udt_code == 2001
                    assert time.monotonic() - started < 4.0
                    assert conn.getsockopt(udt.UDT_STATE) == udt.SocketState.BROKEN
                    with pytest.raises(BrokenPipeError):
                        conn.sendall(b"x")
                    client.setsockopt(udt.UDT_LINGER, 0)
    finally:
        server.close()


def test_stopping_a_multiplexer_tells_the_peer():
    with connected_pair() as (client, server):
        client._mux.stop()  # as at interpreter exit: connections are aborted with a SHUTDOWN
        assert server.recv(10) == b""
        with pytest.raises(OSError) as info:
            client.recv(10)
        assert info.value.errno == errno.EBADF


def test_a_peer_that_missed_every_shutdown_is_told_again():
    """SHUTDOWN has no ACK: the multiplexer remembers connections it closed and answers their
    peer's next packet (an idle peer's keep-alive comes within a second) with a SHUTDOWN, so
    the peer reads EOF instead of waiting for its broken timer (10 s)."""
    from udt.tools.impair import DropNth, Impairment, Relay, UdtControl

    server = udt.create_server((LOOP4, 0))
    try:
        lose_four = Impairment(drop=DropNth(0, 1, 2, 3, where=UdtControl({5})))
        with Relay(server.getsockname(), b_to_a=lose_four, process=True) as relay:
            with udt.create_connection(relay.address, timeout=5) as client:
                server.settimeout(5)
                conn, _ = server.accept()
                conn.sendall(b"last words")
                conn.close()  # all four SHUTDOWN copies get lost
                client.settimeout(8)
                assert recv_exactly(client, 10) == b"last words"
                started = time.monotonic()
                assert client.recv(10) == b""  # EOF, not ConnectionResetError at 10 s
                assert time.monotonic() - started < 4.0
                assert server._mux.stats()["mux_closed_replies"] >= 1
                assert relay.stats().b_to_a.dropped_filter == 4
    finally:
        server.close()


def test_close_gives_up_after_the_linger_time():
    from udt.tools.impair import Impairment, Relay

    server = udt.create_server((LOOP4, 0))
    try:
        with Relay(server.getsockname()) as relay:
            client = udt.create_connection(relay.address, timeout=5)
            server.settimeout(5)
            conn, _ = server.accept()
            try:
                client.sendall(b"hello")
                assert recv_exactly(conn, 5) == b"hello"
                relay.set_impairment("a_to_b", Impairment.cut())  # nothing reaches the peer now
                client.sendall(os.urandom(1 << 20))
                client.setsockopt(udt.UDT_LINGER, 1)
                started = time.monotonic()
                with pytest.raises(udt.UnacknowledgedDataError):  # never a silent loss
                    client.close()
                elapsed = time.monotonic() - started
                assert 0.8 < elapsed < 3.0, elapsed
            finally:
                client.close()
                conn.setsockopt(udt.UDT_LINGER, 0)
                conn.close()
    finally:
        server.close()
