"""The :mod:`socket` module's conventions on udt sockets: three-argument socket options with levels,
getsockname() of a connection on a wildcard port, a connect to a closed port refused at once,
and the half-close between udt peers."""

from __future__ import annotations

import errno
import socket as pysocket
import struct
import time

import pytest

import udt
from test_socket import LOOP4, connected_pair


def test_sol_socket_options_map_to_their_udt_equivalents():
    with udt.socket() as s:
        s.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_RCVBUF, 1 << 20)
        assert s.getsockopt(udt.UDP_RCVBUF) == 1 << 20
        s.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_SNDBUF, struct.pack("i", 300_000))
        assert s.getsockopt(udt.UDP_SNDBUF) == 300_000
        assert s.getsockopt(pysocket.SOL_SOCKET, pysocket.SO_SNDBUF) == 300_000
        assert s.getsockopt(pysocket.SOL_SOCKET, pysocket.SO_SNDBUF, 4) == struct.pack("i", 300_000)
        s.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_REUSEADDR, 0)
        assert s.getsockopt(udt.UDT_REUSEADDR) is False
        assert s.getsockopt(pysocket.SOL_SOCKET, pysocket.SO_REUSEADDR) == 0


def test_so_linger_takes_struct_linger_or_a_pair():
    with udt.socket() as s:
        s.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_LINGER, struct.pack("ii", 1, 7))
        assert s.getsockopt(udt.UDT_LINGER) == (True, 7)
        assert s.getsockopt(pysocket.SOL_SOCKET, pysocket.SO_LINGER) == (1, 7)
        assert s.getsockopt(pysocket.SOL_SOCKET, pysocket.SO_LINGER, 8) == struct.pack("ii", 1, 7)
        s.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_LINGER, (1, 0))  # socket's abortive close
        assert s.getsockopt(udt.UDT_LINGER) == (True, 0)
        s.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_LINGER, (0, 0))  # "no linger": a normal close
        assert s.getsockopt(udt.UDT_LINGER) == (True, udt.options.DEFAULT_LINGER_SECONDS)
        with pytest.raises(OSError) as info:
            s.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_LINGER, b"\x01")
        assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize(
    ("level", "option"),
    [
        (pysocket.IPPROTO_TCP, pysocket.TCP_NODELAY),
        (pysocket.SOL_SOCKET, pysocket.SO_BROADCAST),
        (pysocket.SOL_SOCKET, pysocket.SO_KEEPALIVE),
        (pysocket.IPPROTO_IP, pysocket.IP_TTL),
        (pysocket.IPPROTO_UDP, 1),
        (0, udt.UDT_MSS),  # UDT4's ignored level is not udt's: no silent guess
    ],
)
def test_other_levels_raise_enoprotoopt(level, option):
    with udt.socket() as s:
        before = {opt: s.getsockopt(opt) for opt in udt.SocketOption if opt not in (udt.UDT_STATE,)}
        with pytest.raises(OSError) as info:
            s.setsockopt(level, option, 1)
        assert info.value.errno == errno.ENOPROTOOPT
        with pytest.raises(OSError) as info:
            s.getsockopt(level, option)
        assert info.value.errno == errno.ENOPROTOOPT
        assert {opt: s.getsockopt(opt) for opt in before} == before  # nothing else changed


def test_sol_udt_reaches_every_udt_option_and_two_arguments_stay():
    with udt.socket() as s:
        s.setsockopt(udt.SOL_UDT, udt.UDT_MSS, 1400)
        assert s.getsockopt(udt.SOL_UDT, udt.UDT_MSS) == s.getsockopt(udt.UDT_MSS) == 1400
        s.setsockopt(udt.UDT_FC, 4096)
        assert s.getsockopt(udt.SOL_UDT, udt.UDT_FC, 4) == struct.pack("i", 4096)
        assert s.getsockopt(udt.SOL_UDT, udt.UDT_RCVSYN, 4) == struct.pack("i", 1)
        assert s.getsockopt(udt.SOL_UDT, udt.UDT_LINGER, 8) == struct.pack("ii", 1, 3)
        with pytest.raises(OSError) as info:
            s.getsockopt(udt.SOL_UDT, udt.UDT_CC, 4)  # a controller has no binary form
        assert info.value.errno == errno.EINVAL
        with pytest.raises(udt.InvalidParameterError):
            s.setsockopt(udt.SOL_UDT, 99, 1)
        with pytest.raises(TypeError):
            s.setsockopt(udt.UDT_FC)
        with pytest.raises(TypeError):
            s.getsockopt()


def test_sol_socket_phase_rules_still_apply():
    with udt.socket() as s:
        s.bind((LOOP4, 0))
        with pytest.raises(udt.UDTError):
            s.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_RCVBUF, 1 << 20)  # shapes the UDP socket
        assert s.getsockopt(pysocket.SOL_SOCKET, pysocket.SO_RCVBUF) > 0  # the kernel's figure


def test_connected_client_reports_the_address_it_uses():
    with connected_pair() as (client, accepted):
        host, port = client.getsockname()
        assert host == LOOP4 and port > 0
        assert accepted.getpeername() == (host, port)
        assert accepted.getsockname() == accepted.getsockname()  # learnt once, stable
    with udt.socket() as unconnected:
        unconnected.bind(("0.0.0.0", 0))
        assert unconnected.getsockname()[0] == "0.0.0.0"  # bound, not connected: what was asked


def test_accepted_socket_on_a_wildcard_listener_reports_its_address():
    with udt.create_server(("0.0.0.0", 0)) as server:
        server.settimeout(10)
        port = server.getsockname()[1]
        assert server.getsockname()[0] == "0.0.0.0"
        with udt.create_connection((LOOP4, port), timeout=10) as client:
            accepted, _ = server.accept()
            with accepted:
                assert accepted.getsockname() == (LOOP4, port)
                assert client.getpeername() == (LOOP4, port)


def _closed_port() -> int:
    with pysocket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM) as probe:
        probe.bind((LOOP4, 0))
        return probe.getsockname()[1]  # closed again: the kernel answers it with ICMP


def test_connect_to_a_closed_port_is_refused_at_once():
    port = _closed_port()
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        udt.create_connection((LOOP4, port), timeout=10)
    assert time.monotonic() - started < 1.0  # not the 3 s handshake timeout


def test_refusal_leaves_other_connections_alone():
    with connected_pair() as (client, accepted):
        with pytest.raises(ConnectionRefusedError):
            udt.create_connection((LOOP4, _closed_port()), timeout=10)
        client.sendall(b"still here")
        assert accepted.recv(64) == b"still here"


def test_a_refused_socket_can_connect_elsewhere():
    with udt.socket() as sock, udt.create_server((LOOP4, 0)) as server:
        sock.settimeout(10)
        server.settimeout(10)
        assert sock.connect_ex((LOOP4, _closed_port())) == errno.ECONNREFUSED
        sock.connect(server.getsockname())  # its port follows the new peer
        accepted, _ = server.accept()
        with accepted:
            sock.sendall(b"ping")
            assert accepted.recv(16) == b"ping"


def test_half_close_request_response_between_udt_peers():
    """shutdown(SHUT_WR) as TCP code uses it: the peer reads the request to EOF, then replies."""
    with connected_pair() as (client, server):
        request = b"GET /" + bytes(200_000)
        client.sendall(request)
        client.shutdown(pysocket.SHUT_WR)
        with pytest.raises(BrokenPipeError):
            client.send(b"after shutdown")
        got = bytearray()
        while chunk := server.recv(1 << 16):
            got += chunk
        assert bytes(got) == request
        server.sendall(b"reply " * 10_000)  # a full close here raised BrokenPipeError
        server.close()
        got = bytearray()
        while chunk := client.recv(1 << 16):
            got += chunk
        assert bytes(got) == b"reply " * 10_000
