"""udt-recv serves many senders from one dispatcher thread (udt.epoll), not a thread per idle one."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import udt
from test_cli import Receiver, no_traceback, wait_for
from udt.cli import _wire as wire
from udt.cli._common import parse_host_port

SENDERS = 100
PROG = "udt-recv"


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads line")


def _memory_session(payload: bytes) -> bytes:
    digest = hashlib.sha256(payload).digest()
    return (
        wire.pack_session_header(wire.SessionKind.MEMORY)
        + wire.pack_chunk_header(len(payload))
        + payload
        + wire.pack_end(len(payload), digest)
    )


def _recv_exact(sock: udt.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the receiver closed before its reply"
        data += chunk
    return data


def test_hundred_senders_at_once(tmp_path):
    with Receiver(tmp_path, "--mem", "--json", "--backlog", SENDERS) as recv:
        address = parse_host_port(recv.address)
        idle_threads = _threads(recv.popen.pid)
        socks = []
        try:
            for _ in range(SENDERS):  # one local port for all of them (one multiplexer here)
                sock = udt.socket()
                socks.append(sock)
                sock.setsockopt(udt.UDT_REUSEADDR, True)
                sock.bind(("127.0.0.1", socks[0].getsockname()[1] if len(socks) > 1 else 0))
                sock.settimeout(30)
                sock.connect(address)
            wait_for(lambda: recv.stderr.count("connection from") == SENDERS, what="every connection accepted")
            # 100 connections open, none sending yet: no thread parked for any of them
            assert _threads(recv.popen.pid) <= idle_threads + 2
            payloads = [os.urandom(64 * 1024) for _ in socks]
            for sock, payload in zip(socks, payloads):
                sock.sendall(_memory_session(payload))
            for sock, payload in zip(socks, payloads):
                status, nbytes, digest = wire.unpack_reply(_recv_exact(sock, wire.REPLY.size))
                assert status == wire.ReplyStatus.OK and nbytes == len(payload)
                assert digest == hashlib.sha256(payload).digest()
        finally:
            with ThreadPoolExecutor(25) as pool:  # each close waits a moment for its SHUTDOWN
                list(pool.map(udt.socket.close, socks))
        wait_for(lambda: recv.stderr.count(f"{PROG}: received ") == SENDERS, what="every transfer reported")
        recv.stop()
    summary = recv.json()
    assert len(summary["sessions"]) == SENDERS and summary["failed"] == 0
    assert summary["bytes"] == SENDERS * 64 * 1024
    no_traceback(recv)
