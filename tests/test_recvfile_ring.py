"""``udt.socket._recvfile_into`` (udt-recv's file path): the stream written to a file straight
from the receive ring's slots with the digest fed from the same bytes, and the edges where
that path must behave like a copy: end of stream inside a step, a file that cannot be written
(the bytes stay readable), another reader, path-MTU discovery moving slots, and loss."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
import threading
import time

import pytest

import udt
from loopback_pair import connected_pair
from udt._digest import Sha256
from udt.cli._hashing import BlockHasher
from udt.errors import ErrorCode, FileTransferError

FIXED = {udt.UDT_MSS: 1500}  # no path-MTU discovery: every slot can be lent
GROWING = {udt.UDT_PMTUD: True}  # loopback grows to 65535: the first slots are copied once


def _send_then(client: udt.socket, payload: bytes, close: bool) -> threading.Thread:
    def body() -> None:
        with contextlib.suppress(OSError):  # a test that fails the receive closes the pair
            client.sendall(payload)
            client.flush(timeout=30)
            if close:
                client.close()

    thread = threading.Thread(target=body, name="udt-test-sender")
    thread.start()
    return thread


def test_sha256_matches_hashlib():
    data = os.urandom(100_003)
    ours = Sha256()
    ours.update(data[:7])
    ours.update(memoryview(data)[7:])
    assert ours.digest() == hashlib.sha256(data).digest()
    assert ours.hexdigest() == hashlib.sha256(data).hexdigest()  # digest() does not finalize
    assert Sha256().digest() == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("options", [FIXED, GROWING], ids=["mss1500", "pmtud"])
def test_file_is_the_stream_and_the_digest_its_sha256(tmp_path, options):
    payload = os.urandom(12 << 20)
    target = tmp_path / "out.bin"
    with connected_pair(options) as (client, conn):
        conn.settimeout(30)
        sender = _send_then(client, payload, close=False)
        digest = Sha256()
        with open(target, "wb") as f:
            f.write(b"x" * 10)
            f.flush()
            fd = f.fileno()
            done = 0
            while done < len(payload):  # steps of odd sizes: slots are cut in the middle
                done += conn._recvfile_into(fd, 10 + done, min(1_000_003, len(payload) - done), digest)
            assert os.lseek(fd, 0, os.SEEK_CUR) == 10  # pwritev: the position does not move
        sender.join(30)
        conn.sendall(b"after")  # the connection goes on as usual
        assert client.recv(5) == b"after"
    assert target.read_bytes() == b"x" * 10 + payload
    assert digest.digest() == hashlib.sha256(payload).digest()


def test_stream_ending_inside_a_step_returns_what_arrived(tmp_path):
    payload = os.urandom(300_000)
    with connected_pair(FIXED) as (client, conn):
        conn.settimeout(30)
        sender = _send_then(client, payload, close=True)
        digest = Sha256()
        with open(tmp_path / "half.bin", "wb") as f:
            got = conn._recvfile_into(f.fileno(), 0, 1_000_000, digest)
            assert conn._recvfile_into(f.fileno(), got, 10, digest) == 0  # EOF again
        sender.join(30)
    assert got == len(payload)
    assert (tmp_path / "half.bin").read_bytes() == payload
    assert digest.digest() == hashlib.sha256(payload).digest()


def test_unwritable_file_fails_and_leaves_the_bytes_readable(tmp_path):
    path = tmp_path / "read-only.bin"
    path.write_bytes(b"")
    payload = os.urandom(200_000)
    with connected_pair(FIXED) as (client, conn):
        conn.settimeout(30)
        sender = _send_then(client, payload, close=False)
        digest = Sha256()
        fd = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(FileTransferError) as info:
                conn._recvfile_into(fd, 0, len(payload), digest)
        finally:
            os.close(fd)
        assert info.value.udt_code == ErrorCode.FILE_WRITE and info.value.errno == errno.EBADF
        assert info.value.bytes_written == 0
        assert digest.digest() == hashlib.sha256(b"").digest()  # nothing written, nothing hashed
        received = bytearray()
        while len(received) < len(payload):  # nothing was released: no byte is lost
            received += conn.recv(len(payload) - len(received))
        sender.join(30)
    assert bytes(received) == payload


def test_disk_full_reports_the_bytes_written(tmp_path):
    mount = tmp_path / "small-fs"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        payload = os.urandom(3 << 20)
        with connected_pair(FIXED) as (client, conn):
            conn.settimeout(30)
            sender = _send_then(client, payload, close=False)
            digest = Sha256()
            with open(mount / "too-big.bin", "wb") as f:
                with pytest.raises(FileTransferError) as info:
                    conn._recvfile_into(f.fileno(), 0, len(payload), digest)
            written = info.value.bytes_written
            assert info.value.errno == errno.ENOSPC and 0 < written <= 1 << 20
            assert (mount / "too-big.bin").read_bytes() == payload[:written]
            assert digest.digest() == hashlib.sha256(payload[:written]).digest()
            client.setsockopt(udt.UDT_LINGER, 0)
            sender.join(0.1)
            conn.close()
            client.close()
            sender.join(30)
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_another_reader_is_refused_while_a_file_is_received(tmp_path):
    with connected_pair(FIXED) as (client, conn):
        conn.settimeout(30)
        result: dict = {}

        def receive() -> None:
            with open(tmp_path / "f.bin", "wb") as f:
                result["got"] = conn._recvfile_into(f.fileno(), 0, 1000, None)

        thread = threading.Thread(target=receive, name="udt-test-file")
        thread.start()
        try:
            for _ in range(500):  # until the file receive is waiting for data
                try:
                    conn.recv_into(bytearray(0))  # returns at once, unless refused
                except udt.errors.InvalidParameterError as exc:
                    assert "another thread" in str(exc)
                    break
                time.sleep(0.01)
            else:
                pytest.fail("recv was never refused")
        finally:
            client.sendall(b"y" * 1000)
            thread.join(30)
    assert result == {"got": 1000}
    assert (tmp_path / "f.bin").read_bytes() == b"y" * 1000


def test_message_sockets_have_no_file_receive(tmp_path):
    with connected_pair(FIXED, type=udt.SOCK_DGRAM) as (_, conn):
        with pytest.raises(OSError) as info:
            conn._recvfile_into(0, 0, 10)
        assert info.value.udt_code == ErrorCode.NOT_STREAM_MODE


@pytest.mark.slow
@pytest.mark.parametrize("how", ["into", "leases"])
def test_byte_identical_through_loss_and_reordering(tmp_path, how):
    """Holes, retransmissions, duplicates and reordering around slots being written and lent;
    the leases are hashed by udt-recv's hashing thread (BlockHasher) as in the tool."""
    from udt.tools.impair import Impairment, Relay

    payload = os.urandom(30 << 20)

    def relay(address):
        return Relay(
            address,
            a_to_b=Impairment(loss=0.05, reorder=0.02, duplicate=0.01),
            b_to_a=Impairment(loss=0.02),
            seed=3,
            process=True,
        )

    with connected_pair(FIXED, via=relay) as (client, conn):
        conn.settimeout(120)
        client.settimeout(120)
        sender = _send_then(client, payload, close=False)
        digest = Sha256()
        hasher = BlockHasher(buffers=4)
        hasher.start()
        with open(tmp_path / "lossy.bin", "wb") as f:
            done = 0
            while done < len(payload):
                if how == "into":
                    done += conn._recvfile_into(f.fileno(), done, min(4 << 20, len(payload) - done), digest)
                else:
                    lease = conn._recvfile_lend(f.fileno(), done, len(payload) - done)
                    hasher.lend_lease(lease)
                    done += lease.nbytes
        ours = hasher.result()
        sender.join(120)
        stats = conn.perfmon()
        with contextlib.suppress(OSError):
            client.setsockopt(udt.UDT_LINGER, 0)
    assert stats["pkt_rcv_loss_total"] > 0
    assert (tmp_path / "lossy.bin").read_bytes() == payload
    expected = hashlib.sha256(payload).digest()
    assert (digest.digest() if how == "into" else ours) == expected


@pytest.mark.parametrize("options", [FIXED, GROWING], ids=["mss1500", "pmtud"])
def test_leases_are_hashed_elsewhere_and_released_in_order(tmp_path, options):
    payload = os.urandom(9 << 20)
    with connected_pair(options) as (client, conn):
        conn.settimeout(30)
        sender = _send_then(client, payload, close=False)
        digest = Sha256()
        leases: list = []
        with open(tmp_path / "leased.bin", "wb") as f:
            done = 0
            while done < len(payload):
                lease = conn._recvfile_lend(f.fileno(), done, len(payload) - done)
                assert lease is not None and 0 < lease.nbytes <= 1 << 20
                done += lease.nbytes
                leases.append(lease)
                if len(leases) == 3:  # three held at once: the next ones come from past them
                    with pytest.raises(udt.errors.InvalidParameterError):
                        conn.recv(1)  # their slots are not released: nobody else reads
                    hasher = threading.Thread(
                        target=lambda held=leases[:]: [(x.feed(digest), x.release()) for x in held]
                    )
                    hasher.start()
                    hasher.join(30)
                    leases.clear()
            for lease in leases:
                lease.feed(digest)
                lease.release()
                lease.release()  # once only
        sender.join(30)
        client.sendall(b"more")
        assert conn.recv(4) == b"more"  # every lease released: reads as usual
    assert (tmp_path / "leased.bin").read_bytes() == payload
    assert digest.digest() == hashlib.sha256(payload).digest()


def test_a_dropped_lease_gives_its_bytes_back_and_eof_is_none(tmp_path):
    with connected_pair(FIXED) as (client, conn):
        conn.settimeout(30)
        sender = _send_then(client, b"z" * 5000, close=True)
        with open(tmp_path / "dropped.bin", "wb") as f:
            lease = conn._recvfile_lend(f.fileno(), 0, 3000)
            assert lease.nbytes == 3000
            del lease  # never released by hand: its bytes leave the ring all the same
            rest = conn._recvfile_lend(f.fileno(), 3000, 10_000)
            assert rest.nbytes == 2000
            rest.release()
            assert conn._recvfile_lend(f.fileno(), 5000, 10) is None
        sender.join(30)
    assert (tmp_path / "dropped.bin").read_bytes() == b"z" * 5000


def test_a_lease_that_cannot_be_written_raises_and_lends_nothing(tmp_path):
    path = tmp_path / "read-only.bin"
    path.write_bytes(b"")
    with connected_pair(FIXED) as (client, conn):
        conn.settimeout(30)
        client.sendall(b"q" * 1000)
        fd = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(FileTransferError) as info:
                conn._recvfile_lend(fd, 0, 1000)
        finally:
            os.close(fd)
        assert info.value.errno == errno.EBADF
        assert conn.recv(1000) == b"q" * 1000  # nothing lent, nothing lost


def test_a_step_waits_for_256_kib_rather_than_writing_each_dribble(tmp_path):
    """A paced sender makes a few datagrams readable at a time: a lease (and a recvfile step)
    waits for 256 KiB or the rest of its count instead of writing each dribble."""
    piece = os.urandom(30_000)
    with connected_pair(FIXED) as (client, conn):
        conn.settimeout(30)

        def dribble() -> None:
            for _ in range(12):
                client.sendall(piece)
                time.sleep(0.02)

        sender = threading.Thread(target=dribble, name="udt-test-dribble")
        sender.start()
        with open(tmp_path / "dribbled.bin", "wb") as f:
            lease = conn._recvfile_lend(f.fileno(), 0, 1 << 20)
            assert lease.nbytes >= 256 << 10
            lease.release()
            got = lease.nbytes
            while got < 12 * len(piece):  # the rest: its count is what is left, not 256 KiB
                got += conn._recvfile_into(f.fileno(), got, 12 * len(piece) - got)
        sender.join(30)
    assert (tmp_path / "dribbled.bin").read_bytes() == piece * 12
