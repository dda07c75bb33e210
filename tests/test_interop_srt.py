"""udt against SRT's srt-file-transmit (file mode: UDT4 on the wire), both directions.

SRT falls back to the UDT4 handshake (version 4) by itself, but only for socket type DGRAM;
see docs/testing.md (real peers). srt-file-transmit runs in its own process (udt.tools.peers).
"""

from __future__ import annotations

import hashlib
import time

import pytest

from pattern_io import write_pattern_file
from udt.tools import peers

SRT_MISSING = peers.srt_unavailable_reason()
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(SRT_MISSING is not None, reason=str(SRT_MISSING)),
]

udt = pytest.importorskip("udt")

LOCALHOST = "127.0.0.1"
TIMEOUT = 60.0
SRT_CHUNK = 1456  # srt-file-transmit reads and writes 1456-byte chunks (its -chunk default)


@pytest.mark.parametrize("cc", ["udt4", "bbr"])
@pytest.mark.parametrize("nbytes", [4_000_000, pytest.param(40_000_000, marks=pytest.mark.slow)])
def test_udt_sends_file_to_srt_listener(tmp_path, nbytes, cc):
    source = tmp_path / "in.bin"
    digest = write_pattern_file(source, nbytes, seed=21)
    target = tmp_path / "out.bin"
    with peers.srt_recv(peers.free_udp_port(), target, timeout=TIMEOUT) as listener:
        port = listener.ready()["port"]
        options = {udt.UDT_CC: cc}
        with udt.create_connection((LOCALHOST, port), timeout=10, type=udt.SOCK_DGRAM, options=options) as conn:
            conn.settimeout(TIMEOUT)
            with open(source, "rb") as f:
                while chunk := f.read(SRT_CHUNK):
                    assert conn.sendmsg(chunk) == len(chunk)
        report = listener.result()
    assert report["bytes"] == nbytes and report["sha256"] == digest
    assert peers.file_sha256(target) == (nbytes, digest)


@pytest.mark.parametrize("nbytes", [4_000_000, pytest.param(40_000_000, marks=pytest.mark.slow)])
def test_srt_caller_sends_file_to_udt_server(tmp_path, nbytes):
    source = tmp_path / "in.bin"
    digest = write_pattern_file(source, nbytes, seed=22)
    with udt.create_server((LOCALHOST, 0), type=udt.SOCK_DGRAM) as server:
        server.settimeout(TIMEOUT)
        port = server.getsockname()[1]
        with peers.srt_send((LOCALHOST, port), source, timeout=TIMEOUT) as caller:
            conn, address = server.accept()
            received = hashlib.sha256()
            total = 0
            with conn:
                conn.settimeout(TIMEOUT)
                while message := conn.recvmsg(1 << 16):  # b"" once SRT has closed
                    received.update(message)
                    total += len(message)
            report = caller.result()
    assert address[0] == LOCALHOST
    assert report["sha256"] == digest
    assert (total, received.hexdigest()) == (nbytes, digest)


def test_stream_socket_is_refused_by_srt(tmp_path):
    """SRT accepts the UDT4 handshake only for DGRAM; it answers a STREAM conclusion with
    request type 1004, which udt must report as a refusal, not take for a connection
    (UDT4 itself mistakes it for success and then sends into the void)."""
    with peers.srt_recv(peers.free_udp_port(), tmp_path / "never.bin", timeout=15) as listener:
        port = listener.ready()["port"]
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            udt.create_connection((LOCALHOST, port), timeout=10, type=udt.SOCK_STREAM)
        assert time.monotonic() - started < 5
