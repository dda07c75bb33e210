"""The real-peer drivers themselves: UDT4 (udt4py-ng) and SRT talk to each other through them.

These prove the yardsticks before udt is measured against them: if a peer cannot move data to
itself here, an interop failure would say nothing about udt.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from udt.tools import peers

UDT4_MISSING = peers.udt4_unavailable_reason()
SRT_MISSING = peers.srt_unavailable_reason()
needs_udt4 = pytest.mark.skipif(UDT4_MISSING is not None, reason=str(UDT4_MISSING))
needs_srt = pytest.mark.skipif(SRT_MISSING is not None, reason=str(SRT_MISSING))


def test_pattern_is_deterministic_and_chunking_does_not_change_it():
    whole = peers.pattern_bytes(3 * peers.PATTERN_BLOCK + 1234, seed=7)
    assert len(whole) == 3 * peers.PATTERN_BLOCK + 1234
    pieces = b"".join(peers.pattern_chunks(len(whole), seed=7, chunk=1456))
    assert pieces == whole
    assert peers.pattern_sha256(len(whole), seed=7) == hashlib.sha256(whole).hexdigest()
    assert peers.pattern_bytes(1000, seed=8) != whole[:1000]
    # blocks differ from each other, so swapping two whole blocks changes the digest
    block = peers.PATTERN_BLOCK
    assert whole[:block] != whole[block : 2 * block]


def test_pattern_rejects_bad_arguments():
    with pytest.raises(ValueError):
        list(peers.pattern_chunks(-1))
    with pytest.raises(ValueError):
        list(peers.pattern_chunks(10, chunk=0))


def test_udt4_peer_validates_arguments():
    with pytest.raises(ValueError):
        peers.udt4("recv", rendezvous=True)
    with pytest.raises(ValueError):
        peers.udt4("both")  # type: ignore[arg-type]


def _udt4_pair(nbytes: int, **kw):
    with peers.udt4("recv", nbytes=nbytes, timeout=60, **kw) as server:
        port = server.ready()["port"]
        with peers.udt4("send", connect=("127.0.0.1", port), nbytes=nbytes, timeout=60, **kw) as client:
            sent = client.result()
        received = server.result()
    return sent, received


@needs_udt4
@pytest.mark.interop
@pytest.mark.parametrize("sock_type", ["stream", "dgram"])
@pytest.mark.parametrize("mss", [1500, 9000])
def test_udt4_talks_to_itself(sock_type, mss):
    nbytes = 3_000_000
    sent, received = _udt4_pair(nbytes, sock_type=sock_type, mss=mss)
    expected = peers.pattern_sha256(nbytes)
    assert sent["bytes"] == received["bytes"] == nbytes
    assert sent["sha256"] == received["sha256"] == expected
    assert received["mss"] == mss


@needs_udt4
@pytest.mark.interop
def test_udt4_dgram_keeps_message_boundaries():
    nbytes = 1_000_000
    sent, received = _udt4_pair(nbytes, sock_type="dgram", msg_size=10_000)
    assert received["sha256"] == peers.pattern_sha256(nbytes)
    assert received["messages"] == nbytes // 10_000


@needs_udt4
@pytest.mark.interop
def test_udt4_rendezvous_talks_to_itself():
    nbytes = 2_000_000
    port_a = peers.free_udp_port()
    with peers.udt4("send", rendezvous=True, connect=("127.0.0.1", port_a), nbytes=nbytes, timeout=60) as side_b:
        port_b = side_b.ready()["port"]
        with peers.udt4(
            "recv", port=port_a, rendezvous=True, connect=("127.0.0.1", port_b), nbytes=nbytes, timeout=60
        ) as side_a:
            received = side_a.result()
        sent = side_b.result()
    assert sent["sha256"] == received["sha256"] == peers.pattern_sha256(nbytes)


@needs_udt4
@pytest.mark.interop
def test_udt4_sendfile_recvfile(tmp_path):
    source = tmp_path / "in.bin"
    source.write_bytes(peers.pattern_bytes(2_500_000, seed=3))
    target = tmp_path / "out.bin"
    with peers.udt4("recv", api="file", path=target, nbytes=2_500_000, timeout=60) as server:
        port = server.ready()["port"]
        with peers.udt4("send", connect=("127.0.0.1", port), api="file", path=source, timeout=60) as client:
            client.result()
        received = server.result()
    assert target.read_bytes() == source.read_bytes()
    assert received["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


@needs_udt4
@pytest.mark.interop
def test_connect_to_nobody_fails_with_a_report_not_a_hang():
    port = peers.free_udp_port()
    started = time.monotonic()
    with peers.udt4("send", connect=("127.0.0.1", port), nbytes=10, timeout=30) as client:
        with pytest.raises(peers.PeerError, match="ENOSERVER|1001"):
            client.result(timeout=30)
    assert time.monotonic() - started < 20  # UDT4 gives up after about 3 s


@needs_udt4
@pytest.mark.interop
def test_a_hung_peer_is_killed_by_its_own_timeout():
    started = time.monotonic()
    with peers.udt4("recv", nbytes=10, timeout=2) as server:  # nobody ever connects
        server.ready()
        with pytest.raises(peers.PeerError):
            server.result(timeout=30)
        assert server.proc.returncode is not None and server.proc.returncode != 0
    assert time.monotonic() - started < 25


@needs_srt
@pytest.mark.interop
def test_srt_talks_to_itself(tmp_path):
    source = tmp_path / "in.bin"
    source.write_bytes(peers.pattern_bytes(3_000_000, seed=5))
    target = tmp_path / "out.bin"
    with peers.srt_recv(peers.free_udp_port(), target, timeout=60) as listener:
        port = listener.ready()["port"]
        with peers.srt_send(("127.0.0.1", port), source, timeout=60) as caller:
            sent = caller.result()
        received = listener.result()
    assert sent["sha256"] == received["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


@needs_srt
@needs_udt4
@pytest.mark.interop
def test_srt_and_udt4_interoperate_in_dgram_mode(tmp_path):
    """The fallback that makes SRT a UDT4 peer (peers.md): both directions."""
    source = tmp_path / "in.bin"
    data = peers.pattern_bytes(3_000_000, seed=6)
    source.write_bytes(data)
    target = tmp_path / "out.bin"
    with peers.srt_recv(peers.free_udp_port(), target, timeout=60) as listener:
        port = listener.ready()["port"]
        with peers.udt4(
            "send", connect=("127.0.0.1", port), sock_type="dgram", msg_size=1456, path=source, timeout=60
        ) as client:
            client.result()
        listener.result()
    assert target.read_bytes() == data
    with peers.udt4("recv", sock_type="dgram", timeout=60) as server:
        port = server.ready()["port"]
        with peers.srt_send(("127.0.0.1", port), source, timeout=60) as caller:
            caller.result()
        received = server.result()
    assert received["sha256"] == hashlib.sha256(data).hexdigest()


@needs_srt
@pytest.mark.interop
def test_srt_send_to_nobody_is_an_error(tmp_path):
    """srt-file-transmit exits with 0 when it cannot connect: the driver must not call that a success."""
    source = tmp_path / "in.bin"
    source.write_bytes(b"x" * 1000)
    with peers.srt_send(("127.0.0.1", peers.free_udp_port()), source, timeout=30) as caller:
        with pytest.raises(peers.PeerError, match="did not send"):
            caller.result(timeout=40)


@needs_srt
@pytest.mark.interop
def test_srt_listener_that_times_out_leaves_no_process_behind(tmp_path):
    with peers.srt_recv(peers.free_udp_port(), tmp_path / "out.bin", timeout=2) as listener:
        listener.ready()
        with pytest.raises(peers.PeerError, match="did not finish"):
            listener.result(timeout=30)
    group = listener.proc.pid  # the driver leads the group srt-file-transmit ran in
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)
    assert not list(tmp_path.glob(".srt-recv-*"))  # the spool directory is gone too
