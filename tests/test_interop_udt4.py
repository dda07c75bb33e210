"""udt against the reference UDT4 library (4.11 via udt4py-ng), both directions.

The UDT4 peer runs in its own process (udt/tools/peers.py), so a crash or hang of the C++ library
cannot take the test down; udt runs here through its public socket API. Every transfer is
checked end to end with sha256. Set UDT_INTEROP_CAPTURE=DIR to record each test's traffic as a
pcapng (dumpcap) for ``python -m udt.tools.udtdump DIR/TEST.pcapng``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from pattern_io import pattern_message_sizes, receive_pattern, send_pattern, write_pattern_file
from udt.tools import peers

UDT4_MISSING = peers.udt4_unavailable_reason()
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(UDT4_MISSING is not None, reason=str(UDT4_MISSING)),
]

udt = pytest.importorskip("udt")

LOCALHOST = "127.0.0.1"
MSG_SIZE = 50_000  # DGRAM message size: spans many packets at MSS 1500 and at 9000
TIMEOUT = 60.0


def _type(sock_type: str) -> int:
    return udt.SOCK_STREAM if sock_type == "stream" else udt.SOCK_DGRAM


@contextmanager
def wire_capture(request, port: int):
    """Record the test's traffic on lo with dumpcap when UDT_INTEROP_CAPTURE is set."""
    target = os.environ.get("UDT_INTEROP_CAPTURE")
    dumpcap = shutil.which("dumpcap")
    if not target or dumpcap is None:
        yield None
        return
    Path(target).mkdir(parents=True, exist_ok=True)
    path = Path(target) / f"{request.node.name.replace('/', '_')}.pcapng"
    proc = subprocess.Popen(
        [dumpcap, "-q", "-i", "lo", "-f", f"udp port {port}", "-w", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # dumpcap gives no ready signal
    try:
        yield path
    finally:
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


def udt_send(sock, sock_type: str, nbytes: int, seed: int = 0) -> str:
    """Send the pattern over a connected udt socket; returns its sha256."""
    return send_pattern(sock, sock_type == "dgram", nbytes, msg_size=MSG_SIZE, seed=seed)


def udt_recv(sock, sock_type: str, nbytes: int | None) -> tuple[int, str, list[int]]:
    """Receive until nbytes (or the peer's close when None); returns (bytes, sha256, message sizes)."""
    return receive_pattern(sock, sock_type == "dgram", nbytes)


def expected_message_sizes(nbytes: int) -> list[int]:
    return pattern_message_sizes(nbytes, MSG_SIZE)


def check_messages(sizes: list[int], nbytes: int) -> None:
    """UDT4 DGRAM keeps message boundaries: every message arrives whole and in order."""
    assert sizes == expected_message_sizes(nbytes)


# --------------------------------------------------------------------------- udt -> UDT4
@pytest.mark.parametrize(("mss", "cc"), [(1500, "udt4"), (9000, "udt4"), (1500, "bbr")])
@pytest.mark.parametrize("sock_type", ["stream", "dgram"])
def test_udt_client_sends_to_udt4_server(request, sock_type, mss, cc):
    nbytes = 8_000_000
    with peers.udt4("recv", sock_type=sock_type, mss=mss, nbytes=nbytes, msg_size=MSG_SIZE, timeout=TIMEOUT) as server:
        port = server.ready()["port"]
        with wire_capture(request, port):
            with udt.create_connection(
                (LOCALHOST, port), timeout=10, type=_type(sock_type), options={udt.UDT_MSS: mss, udt.UDT_CC: cc}
            ) as conn:
                assert conn.getsockopt(udt.UDT_MSS) == mss
                conn.settimeout(TIMEOUT)
                sent = udt_send(conn, sock_type, nbytes)
            report = server.result()
    assert report["bytes"] == nbytes and report["sha256"] == sent
    if sock_type == "dgram":
        assert report["messages"] == len(expected_message_sizes(nbytes))


@pytest.mark.parametrize("mss", [1500, 9000])
@pytest.mark.parametrize("sock_type", ["stream", "dgram"])
def test_udt4_client_sends_to_udt_server(request, sock_type, mss):
    nbytes = 8_000_000
    with udt.create_server((LOCALHOST, 0), type=_type(sock_type), options={udt.UDT_MSS: mss}) as server:
        server.settimeout(TIMEOUT)
        port = server.getsockname()[1]
        with wire_capture(request, port):
            with peers.udt4(
                "send",
                connect=(LOCALHOST, port),
                sock_type=sock_type,
                mss=mss,
                nbytes=nbytes,
                msg_size=MSG_SIZE,
                timeout=TIMEOUT,
            ) as client:
                conn, address = server.accept()
                with conn:
                    assert address[0] == LOCALHOST
                    assert conn.getsockopt(udt.UDT_MSS) == mss
                    conn.settimeout(TIMEOUT)
                    total, digest, sizes = udt_recv(conn, sock_type, nbytes)
                report = client.result()
    assert total == nbytes and digest == report["sha256"] == peers.pattern_sha256(nbytes)
    if sock_type == "dgram":
        check_messages(sizes, nbytes)


# --------------------------------------------------------------------------- rendezvous
@pytest.mark.parametrize("mss", [1500, 9000])
@pytest.mark.parametrize("sock_type", ["stream", "dgram"])
@pytest.mark.parametrize("direction", ["udt_sends", "udt4_sends"])
def test_rendezvous(request, direction, sock_type, mss):
    nbytes = 4_000_000
    with udt.socket(udt.AF_INET, _type(sock_type)) as sock:
        sock.setsockopt(udt.UDT_RENDEZVOUS, True)
        sock.setsockopt(udt.UDT_MSS, mss)
        sock.bind((LOCALHOST, 0))
        port = sock.getsockname()[1]
        action = "recv" if direction == "udt_sends" else "send"
        with wire_capture(request, port):
            with peers.udt4(
                action,
                rendezvous=True,
                connect=(LOCALHOST, port),
                sock_type=sock_type,
                mss=mss,
                nbytes=nbytes,
                msg_size=MSG_SIZE,
                timeout=TIMEOUT,
            ) as peer:
                peer_port = peer.ready()["port"]
                sock.settimeout(TIMEOUT)
                sock.connect((LOCALHOST, peer_port))
                assert sock.getpeername() == (LOCALHOST, peer_port)
                if direction == "udt_sends":
                    digest = udt_send(sock, sock_type, nbytes)
                    sock.close()
                    report = peer.result()
                    assert report["bytes"] == nbytes and report["sha256"] == digest
                else:
                    total, digest, sizes = udt_recv(sock, sock_type, nbytes)
                    report = peer.result()
                    assert total == nbytes and digest == report["sha256"] == peers.pattern_sha256(nbytes)
                    if sock_type == "dgram":
                        check_messages(sizes, nbytes)


# --------------------------------------------------------------------------- files and size
@pytest.mark.slow
def test_udt_sendfile_to_udt4_recvfile(request, tmp_path):
    nbytes = 32_000_000
    source = tmp_path / "in.bin"
    write_pattern_file(source, nbytes, seed=11)
    target = tmp_path / "out.bin"
    with peers.udt4("recv", api="file", path=target, nbytes=nbytes, timeout=TIMEOUT) as server:
        port = server.ready()["port"]
        with wire_capture(request, port):
            with udt.create_connection((LOCALHOST, port), timeout=10) as conn:
                conn.settimeout(TIMEOUT)
                assert conn.sendfile(source) == nbytes
            report = server.result()
    assert report["sha256"] == peers.pattern_sha256(nbytes, seed=11)
    assert peers.file_sha256(target) == (nbytes, report["sha256"])


@pytest.mark.slow
def test_udt4_sendfile_to_udt_recvfile(request, tmp_path):
    nbytes = 32_000_000
    source = tmp_path / "in.bin"
    write_pattern_file(source, nbytes, seed=12)
    target = tmp_path / "out.bin"
    with udt.create_server((LOCALHOST, 0)) as server:
        server.settimeout(TIMEOUT)
        port = server.getsockname()[1]
        with wire_capture(request, port):
            with peers.udt4("send", connect=(LOCALHOST, port), api="file", path=source, timeout=TIMEOUT) as client:
                conn, _ = server.accept()
                with conn:
                    conn.settimeout(TIMEOUT)
                    assert conn.recvfile(target, 0, nbytes) == nbytes
                client.result()
    assert peers.file_sha256(target) == (nbytes, peers.pattern_sha256(nbytes, seed=12))


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["udt_sends", "udt4_sends"])
def test_large_stream_transfer(request, direction):
    """Tens of MB each way: long enough for congestion control, flow window and many full ACKs."""
    nbytes = 48_000_000
    if direction == "udt_sends":
        with peers.udt4("recv", nbytes=nbytes, timeout=TIMEOUT * 2) as server:
            port = server.ready()["port"]
            with wire_capture(request, port):
                with udt.create_connection((LOCALHOST, port), timeout=10) as conn:
                    conn.settimeout(TIMEOUT * 2)
                    digest = udt_send(conn, "stream", nbytes)
                report = server.result()
        assert report["bytes"] == nbytes and report["sha256"] == digest
    else:
        with udt.create_server((LOCALHOST, 0)) as server:
            server.settimeout(TIMEOUT)
            port = server.getsockname()[1]
            with wire_capture(request, port):
                with peers.udt4("send", connect=(LOCALHOST, port), nbytes=nbytes, timeout=TIMEOUT * 2) as client:
                    conn, _ = server.accept()
                    with conn:
                        conn.settimeout(TIMEOUT * 2)
                        total, digest, _ = udt_recv(conn, "stream", nbytes)
                    client.result()
        assert total == nbytes and digest == peers.pattern_sha256(nbytes)


# --------------------------------------------------------------------------- handshake edges
def test_type_mismatch_is_rejected_by_udt4():
    """A STREAM udt client against a DGRAM UDT4 listener: UDT4 answers 1002, udt must refuse."""
    with peers.udt4("recv", sock_type="dgram", nbytes=1, timeout=15) as server:
        port = server.ready()["port"]
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            udt.create_connection((LOCALHOST, port), timeout=10)
        assert time.monotonic() - started < 5


def test_udt4_client_rejected_by_udt_on_type_mismatch():
    with udt.create_server((LOCALHOST, 0), type=udt.SOCK_DGRAM) as server:
        port = server.getsockname()[1]
        with peers.udt4("send", connect=(LOCALHOST, port), sock_type="stream", nbytes=10, timeout=20) as client:
            with pytest.raises(peers.PeerError, match="ECONNREJ|1002"):
                client.result(timeout=20)


# --------------------------------------------------------------------------- the wire itself
needs_dumpcap = pytest.mark.skipif(
    shutil.which("dumpcap") is None, reason="dumpcap is not installed (apt-get install tshark)"
)


@contextmanager
def dumpcap(path: Path, port: int):
    """Capture UDP on ``port`` on lo into ``path`` for the duration of the block."""
    proc = subprocess.Popen(
        [shutil.which("dumpcap"), "-q", "-i", "lo", "-f", f"udp port {port}", "-w", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # dumpcap gives no ready signal
    try:
        yield
    finally:
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


def check_udt_datagrams(capture: Path, udt_port: int, expected_kinds: set[str]) -> None:
    """Decode every datagram udt sent (udt.tools.udtdump): none may break the wire format."""
    from udt.tools import udtdump

    ours = [r for r in udtdump.split_gso_records(udtdump.read_pcap(capture)) if r.sport == udt_port]
    assert ours, "nothing captured from udt"
    problems, kinds = [], set()
    for record in ours:
        packet = udtdump.decode(record.payload)
        kinds.add(packet.name)
        if not packet.ok:
            problems.append(packet.summary())
        if packet.name == "handshake":
            assert packet.fields["cif_length"] == 48 and packet.fields["version"] == 4
            assert packet.fields["peer_ip"] == LOCALHOST
        if packet.kind == "data":
            assert packet.fields["msgno"] < 1 << 26  # SRT reads bits 26-27 as encryption flags
    assert not problems, "\n".join(problems[:20])
    assert expected_kinds <= kinds


@needs_dumpcap
def test_udt_sender_wire_is_valid_udt4(tmp_path):
    nbytes = 3_000_000
    capture = tmp_path / "wire.pcapng"
    with peers.udt4("recv", nbytes=nbytes, timeout=TIMEOUT) as peer:
        port = peer.ready()["port"]
        with dumpcap(capture, port):
            with udt.create_connection((LOCALHOST, port), timeout=10) as conn:
                conn.settimeout(TIMEOUT)
                udt_port = conn.getsockname()[1]
                udt_send(conn, "stream", nbytes)
            peer.result()
    check_udt_datagrams(capture, udt_port, {"handshake", "data", "ack2"})


@needs_dumpcap
def test_udt_receiver_wire_is_valid_udt4(tmp_path):
    nbytes = 3_000_000
    capture = tmp_path / "wire.pcapng"
    with udt.create_server((LOCALHOST, 0)) as server:
        server.settimeout(TIMEOUT)
        udt_port = server.getsockname()[1]
        with dumpcap(capture, udt_port):
            with peers.udt4("send", connect=(LOCALHOST, udt_port), nbytes=nbytes, timeout=TIMEOUT) as peer:
                conn, _ = server.accept()
                with conn:
                    conn.settimeout(TIMEOUT)
                    assert udt_recv(conn, "stream", nbytes)[0] == nbytes
                peer.result()
    check_udt_datagrams(capture, udt_port, {"handshake", "ack"})
