"""Faults survived, nothing lost: a stopped receiver, a cut link, a full disk, a killed CLI.
Byte-identical results (sha256) where the transfer can finish, a clear error where it cannot,
never a hang and never a partial file left behind."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import udt
from rebinding_nat import RebindingNat
from test_cli import Proc, Receiver, cli, make_file, run_sender, sender, sha256_file, wait_for
from test_connect_close import relayed_pair
from udt.cli import _wire as wire

LOOP4 = "127.0.0.1"


def _partial_started(out) -> bool:
    return any(p.name.startswith(wire.PARTIAL_PREFIX) and p.stat().st_size > 0 for p in out.iterdir())


@pytest.mark.slow
def test_receiver_stopped_for_5_s_then_resumed(tmp_path):
    """SIGSTOP the receiving process for 5 s (below the 10 s idle timeout) mid-file: the
    sender waits, the transfer resumes and the file arrives intact."""
    out = tmp_path / "out"
    source = make_file(tmp_path / "big.bin", 8 << 20)
    with Receiver(tmp_path, "--output", out, "--once") as recv:
        send = sender(tmp_path, source, recv.address, "--max-bw", "4MB/s")
        wait_for(lambda: _partial_started(out), what="a partial file")
        recv.popen.send_signal(signal.SIGSTOP)
        time.sleep(5)
        recv.popen.send_signal(signal.SIGCONT)
        assert send.wait() == 0, send.stderr
        assert recv.wait() == 0, recv.stderr
    assert sha256_file(out / "big.bin") == sha256_file(source)


@pytest.mark.slow
def test_killed_receiver_is_reported_by_the_sender_within_the_idle_timeout(tmp_path):
    out = tmp_path / "out"
    source = make_file(tmp_path / "big.bin", 16 << 20)
    with Receiver(tmp_path, "--output", out) as recv:
        send = sender(tmp_path, source, recv.address, "--max-bw", "2MB/s")
        wait_for(lambda: _partial_started(out), what="a partial file")
        recv.popen.kill()
        recv.popen.wait()
        started = time.monotonic()
        assert send.wait(30) == 5, send.stderr  # connection lost mid-transfer
        assert time.monotonic() - started < 15  # the 10 s idle timeout, plus slack for load
        assert "Traceback" not in send.stderr


def _limited_receiver(tmp_path, fsize: int, *args: object) -> Proc:
    """udt-recv whose files may not grow past *fsize* bytes (RLIMIT_FSIZE: the disk is full)."""
    proc = Proc(
        tmp_path, "recv", ["prlimit", f"--fsize={fsize}", *cli("recv", "--port", 0, "--bind", "127.0.0.1", *args)]
    )

    def listening() -> str | None:
        for line in proc.stderr.splitlines():
            if line.startswith("udt-recv: listening on "):
                return line.rsplit(" ", 1)[1]
        return None

    proc.address = wait_for(listening, what="udt-recv to listen")  # type: ignore[attr-defined]
    return proc


def test_disk_full_under_udt_recv(tmp_path):
    """A write that fails (EFBIG here, ENOSPC on a full disk): the sender is told, no partial
    file is left, and the server goes on serving the next client."""
    out = tmp_path / "out"
    out.mkdir()
    recv = _limited_receiver(tmp_path, 1 << 20, "--output", out)
    try:
        big = make_file(tmp_path / "big.bin", 3 << 20)
        code, send = run_sender(tmp_path, big, recv.address)  # type: ignore[attr-defined]
        assert code in (6, 7), send.stderr
        assert "Traceback" not in send.stderr and "Traceback" not in recv.stderr
        wait_for(lambda: list(out.iterdir()) == [], what="the partial file to go")
        assert recv.popen.poll() is None  # still serving
        small = make_file(tmp_path / "small.bin", 100_000)
        code, send = run_sender(tmp_path, small, recv.address, name="send2")  # type: ignore[attr-defined]
        assert code == 0, send.stderr
        assert sha256_file(out / "small.bin") == sha256_file(small)
    finally:
        recv.stop()


def _stream(sock, payload: bytes, result: dict) -> None:
    try:
        sock.sendall(payload)
        sock.close()
        result["done"] = True
    except OSError as exc:
        result["error"] = exc


def _read_all(sock, result: dict) -> None:
    chunks = []
    try:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            chunks.append(data)
        result["data"] = b"".join(chunks)
    except OSError as exc:
        result["error"] = exc
        result["got"] = sum(map(len, chunks))


def _cut_and_restore(relay, seconds: float) -> None:
    from udt.tools.impair import Impairment

    for direction in ("a_to_b", "b_to_a"):
        relay.set_impairment(direction, Impairment.cut())
    time.sleep(seconds)
    for direction in ("a_to_b", "b_to_a"):
        relay.set_impairment(direction, Impairment())


def _transfer_with_a_cut(options, cut_seconds: float, size: int) -> tuple[bytes, dict, dict]:
    payload = os.urandom(size)
    sent: dict = {}
    got: dict = {}
    with relayed_pair(options, a_to_b=_slow(), b_to_a=_slow()) as (client, conn, relay):
        writer = threading.Thread(target=_stream, args=(client, payload, sent))
        reader = threading.Thread(target=_read_all, args=(conn, got))
        writer.start()
        reader.start()
        time.sleep(0.5)  # mid-transfer
        _cut_and_restore(relay, cut_seconds)
        writer.join(30)
        reader.join(30)
        assert not writer.is_alive() and not reader.is_alive(), "a side hung"
    return payload, sent, got


def _slow():
    from udt.tools.impair import Impairment

    return Impairment(rate=20_000_000, queue_packets=500)  # 2.5 MB/s: the transfer takes seconds


@pytest.mark.slow
def test_link_cut_for_8_s_below_the_idle_timeout_resumes():
    payload, sent, got = _transfer_with_a_cut({udt.UDT_LINGER: (True, 20)}, 8.0, 4 << 20)
    assert sent == {"done": True}, sent
    assert got.get("data") == payload, {k: v for k, v in got.items() if k != "data"}


def test_link_cut_above_the_idle_timeout_fails_clearly_on_both_sides():
    options = {udt.UDT_PEERIDLETIMEO: 1000}
    payload, sent, got = _transfer_with_a_cut(options, 2.5, 4 << 20)
    assert isinstance(sent.get("error"), OSError), sent
    assert sent["error"].unacknowledged > 0, sent
    assert isinstance(got.get("error"), ConnectionResetError), got
    assert got["got"] + sent["error"].unacknowledged >= len(payload)


def test_nat_rebinding_without_encryption_fails_clearly():
    """The client's public port changes mid-transfer.  Without encryption nothing proves that
    packets from the new port come from the same peer (the socket ID is guessable), so the server
    drops them as from the wrong source and both sides end with an error, never a hang."""
    options = {udt.UDT_PEERIDLETIMEO: 1000}
    server = udt.create_server((LOOP4, 0), options=options)
    nat = RebindingNat(server.getsockname())
    sent: dict = {}
    got: dict = {}
    try:
        client = udt.create_connection(nat.address, timeout=5, options=options)
        server.settimeout(5)
        conn, _ = server.accept()
        with client, conn:
            client.setsockopt(udt.UDT_MAXBW, 2_000_000)
            writer = threading.Thread(target=_stream, args=(client, os.urandom(4 << 20), sent))
            reader = threading.Thread(target=_read_all, args=(conn, got))
            writer.start()
            reader.start()
            time.sleep(0.3)
            nat.rebind()
            writer.join(15)
            reader.join(15)
            assert not writer.is_alive() and not reader.is_alive(), "a side hung"
            assert server._mux.stats()["mux_invalid_wrong_source"] > 0
            conn.setsockopt(udt.UDT_LINGER, 0)
    finally:
        nat.close()
        server.close()
    assert isinstance(sent.get("error"), OSError) and sent["error"].unacknowledged > 0, sent
    assert isinstance(got.get("error"), ConnectionResetError), got
