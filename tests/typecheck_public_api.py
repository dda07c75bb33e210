"""Type-checked, never run: ``mypy --strict tests/typecheck_public_api.py`` (from .ci/run) proves a
user's strictly typed code can call udt's public API without an ignore.  Keep it calling every
public name a user reaches for; it fails when an annotation goes missing or wrong."""

from __future__ import annotations

import socket as pysocket

import udt
import udt.cc
import udt.dgram
import udt.errors
import udt.options


def server_side(port: int) -> bytes:
    with udt.create_server(("127.0.0.1", port), backlog=8, options={udt.UDT_MSS: 1400}) as server:
        server.settimeout(5.0)
        conn, address = server.accept()
        host: str = address[0]
        with conn:
            data: bytes = conn.recv(65536)
            buffer = bytearray(16)
            count: int = conn.recv_into(buffer)
            conn.sendall(data + buffer[:count] + host.encode())
            conn.shutdown(udt.SHUT_WR)
            return data


def client_side(port: int, path: str) -> float:
    sock = udt.socket(udt.AF_INET, udt.SOCK_STREAM)
    sock.setsockopt(udt.UDT_RCVBUF, 1 << 20)
    sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_RCVBUF, 1 << 20)
    sock.setsockopt(udt.SOL_UDT, udt.UDT_LINGER, (True, 2))
    mss: int = sock.getsockopt(udt.UDT_MSS)
    raw: bytes = sock.getsockopt(pysocket.SOL_SOCKET, pysocket.SO_SNDBUF, 4)
    state: udt.SocketState = sock.getsockopt(udt.UDT_STATE)
    sock.settimeout(None)
    timeout: float | None = sock.gettimeout()
    blocking: bool = sock.getblocking()
    errno_value: int = sock.connect_ex(("127.0.0.1", port))
    sock.connect(("127.0.0.1", port))
    local: tuple[str, int] = sock.getsockname()
    peer: tuple[str, int] = sock.getpeername()
    sent: int = sock.send(b"x" * mss) + sock.sendfile(path, 0, None)
    received: int = sock.recvfile(path + ".copy", 0, 10)
    stats: udt.PerfMon = sock.perfmon(clear=True)
    rtt: float = stats["ms_rtt"]
    ident: int | None = sock.socket_id
    family: pysocket.AddressFamily = sock.family
    kind: pysocket.SocketKind = sock.type
    sock.close()
    del raw, state, timeout, blocking, errno_value, local, peer, sent, received, ident, family, kind
    return rtt


def messages(port: int) -> bytes:
    with udt.create_connection(("127.0.0.1", port), timeout=3.0, type=udt.SOCK_DGRAM) as sock:
        taken: int = sock.sendmsg(b"hello", ttl=0.5, inorder=True)
        del taken
        return sock.recvmsg(1500)


def errors(port: int) -> str:
    try:
        udt.create_connection(("127.0.0.1", port), timeout=1.0)
    except udt.ConnectTimeoutError as exc:
        code: int | None = exc.udt_code
        return f"{exc.errno} {code}"
    except ConnectionRefusedError as exc:
        return str(exc.errno)
    except udt.UDTError as exc:
        return exc.strerror or ""
    return ""


class Steady(udt.cc.CongestionControl):
    def on_ack(self, ack: int) -> None:
        self.cwnd = 64.0


def options() -> list[str]:
    names = [option.name for option in udt.SocketOption]
    spec: udt.options.OptionSpec = udt.options.OPTION_SPECS[udt.UDT_FC]
    value: object = udt.options.validate(udt.UDT_FC, 1024)
    del spec, value
    return names + [udt.ErrorCode(1001).name, udt.EpollEvent.IN.name]


def files_and_datagrams(sock: udt.socket) -> bytes:
    with sock.makefile("rb") as stream:
        head: bytes = stream.read(4)
    with udt.dgram.create_socket("udp4", reuse_addr=True) as dgram:
        dgram.bind(port=0)
        dgram.send(head, dgram.address().port, "127.0.0.1")
    sock.detach()  # always raises: a udt socket has no descriptor of its own
