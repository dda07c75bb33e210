"""udt-send / udt-recv as real processes over loopback (plus their pure helpers in-process)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import udt
from udt.cli import _wire as wire
from udt.cli._common import parse_host_port
from udt.units import parse_rate_bytes_per_s

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
ENV.pop("UDT_CLI_DEBUG", None)
JSON_KEYS = {"bytes", "seconds", "mbit_per_s", "sha256", "retransmitted", "lost"}
WAIT = 60.0  # generous: two cores shared with other busy processes


def cli(tool: str, *args: object) -> list[str]:
    return [sys.executable, "-m", f"udt.cli.{tool}", *map(str, args)]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for(predicate, timeout: float = WAIT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Proc:
    """A CLI process whose stdout and stderr go to files (never a pipe that could fill up)."""

    def __init__(self, tmp: Path, name: str, argv: list[str]) -> None:
        self.out_path, self.err_path = tmp / f"{name}.out", tmp / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=ENV, cwd=str(ROOT)
            )

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait(self, timeout: float = WAIT) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"process did not finish: {self.stderr}") from None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def json(self) -> dict:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected exactly one JSON line, got {lines!r}"
        return json.loads(lines[0])


class Receiver(Proc):
    def __init__(self, tmp: Path, *args: object, name: str = "recv", bind: str = "127.0.0.1") -> None:
        super().__init__(tmp, name, cli("recv", "--port", 0, "--bind", bind, *args))
        marker = wait_for(lambda: self._listening() or self.popen.poll() is not None, what="udt-recv to listen")
        assert marker is not True or self.popen.poll() is None, f"udt-recv exited: {self.stderr}"
        self.address = self._listening()
        assert self.address, f"udt-recv did not announce its port: {self.stderr}"

    def _listening(self) -> str | None:
        for line in self.stderr.splitlines():
            if line.startswith("udt-recv: listening on "):
                return line.rsplit(" ", 1)[1]
        return None

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def sender(tmp: Path, *args: object, name: str = "send") -> Proc:
    return Proc(tmp, name, cli("send", *args))


def run_sender(tmp: Path, *args: object, name: str = "send") -> tuple[int, Proc]:
    proc = sender(tmp, *args, name=name)
    return proc.wait(), proc


def make_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def no_traceback(proc: Proc) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "\r" not in proc.stderr, "progress bar drawn into a pipe"


# --------------------------------------------------------------------------- pure helpers


def test_max_bw_takes_udt_units():
    """--max-bw parses with udt.units (tests/test_units.py): bits/s, or bytes/s spelled B/s."""
    assert parse_rate_bytes_per_s("800Mbps") == parse_rate_bytes_per_s("100MB/s") == 100_000_000


@pytest.mark.parametrize(
    "text,expected",
    [
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("[::1]:9000", ("::1", 9000)),
        ("example.org:1", ("example.org", 1)),
    ],
)
def test_parse_host_port(text, expected):
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["::1:9000", "host", "host:", "host:0", "host:70000", "[::1]9000"])
def test_parse_host_port_rejects(text):
    with pytest.raises(ValueError):
        parse_host_port(text)


@pytest.mark.parametrize(
    "raw",
    [
        b"..",
        b".",
        b"../evil",
        b"a/b",
        b"/etc/passwd",
        b"a\\b",
        b"",
        b"x\x00y",
        b"bell\x07",
        b"\xff\xfe",
        b"a" * 256,
        wire.PARTIAL_PREFIX.encode() + b"abc",
        "evil\u202etxt".encode(),
    ],
)
def test_unsafe_names_are_refused(raw):
    with pytest.raises(ValueError):
        wire.check_file_name(raw)


@pytest.mark.parametrize("name", ["data.bin", ".hidden", "résumé.pdf", "a" * 255, "..dots..", "日本"])
def test_safe_names_are_accepted(name):
    assert wire.check_file_name(name.encode()) == name


def test_session_digest_of_one_file_is_its_sha256():
    digest = hashlib.sha256(b"abc").digest()
    assert wire.session_digest([digest]) == digest
    assert wire.session_digest([digest, digest]) == hashlib.sha256(digest + digest).digest()


# --------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    "tool,args,message",
    [
        ("send", [], "HOST:PORT"),
        ("send", ["127.0.0.1:9000"], "nothing to send"),
        ("send", ["file", "::1:9000"], "IPv6"),
        ("send", ["file", "127.0.0.1:99999"], "out of range"),
        ("send", ["--mem", "2", "file", "127.0.0.1:9000"], "--mem"),
        ("send", ["--mem", "-1", "127.0.0.1:9000"], "positive"),
        ("send", ["--mss", "20", "f", "127.0.0.1:9000"], "MSS"),
        ("send", ["--max-bw", "fast", "f", "127.0.0.1:9000"], "invalid rate"),
        ("recv", ["--port", "9000"], "--output"),
        ("recv", ["--port", "x", "--mem"], "invalid port"),
        ("recv", ["--mem", "--output", "/tmp"], "--mem"),
        ("recv", ["--mem", "--rendezvous", "nohost"], "HOST:PORT"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, tool, args, message):
    proc = Proc(tmp_path, tool, cli(tool, *args))
    assert proc.wait() == 2
    assert message in proc.stderr and "usage:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_documents_exit_codes(tmp_path):
    for tool in ("send", "recv"):
        proc = Proc(tmp_path, tool, cli(tool, "--help"))
        assert proc.wait() == 0
        assert "exit codes:" in proc.stdout and "130" in proc.stdout and "--json" in proc.stdout


def test_missing_file_exit_7(tmp_path):
    code, proc = run_sender(tmp_path, tmp_path / "absent.bin", "127.0.0.1:9")
    assert code == 7
    assert "absent.bin" in proc.stderr and "No such file" in proc.stderr
    no_traceback(proc)


def test_unknown_host_exit_3(tmp_path):
    make_file(tmp_path / "f", 10)
    code, proc = run_sender(tmp_path, tmp_path / "f", "no-such-host.invalid:9000")
    assert code == 3, proc.stderr
    assert "cannot resolve" in proc.stderr
    no_traceback(proc)


# --------------------------------------------------------------------------- transfers


def test_unreachable_port_fails_fast_with_its_code(tmp_path):
    make_file(tmp_path / "f", 10)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    code, proc = run_sender(tmp_path, "--timeout", "2", tmp_path / "f", f"127.0.0.1:{port}")
    assert time.monotonic() - started < 30
    assert code in (3, 4), proc.stderr
    assert f"127.0.0.1:{port}" in proc.stderr
    assert ("refused" in proc.stderr) if code == 3 else ("no answer" in proc.stderr)
    no_traceback(proc)


def test_send_several_files_verified(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    files = [
        make_file(src / "empty.bin", 0),
        make_file(src / "one.bin", 1),
        make_file(src / "multi.bin", 3 * 1024 * 1024 + 17),
        make_file(src / "small.txt", 4096),
    ]
    with Receiver(tmp_path, "--output", out, "--once", "--json") as recv:
        code, send = run_sender(tmp_path, *files, recv.address, "--json")
        assert code == 0, send.stderr
        assert recv.wait() == 0, recv.stderr
    for f in files:
        assert sha256_file(out / f.name) == sha256_file(f)
    assert sorted(p.name for p in out.iterdir()) == sorted(f.name for f in files)  # no partials left
    digests = [hashlib.sha256(f.read_bytes()).digest() for f in files]
    expected = hashlib.sha256(b"".join(digests)).hexdigest()
    total = sum(f.stat().st_size for f in files)
    for result in (send.json(), recv.json()):
        assert JSON_KEYS <= result.keys()
        assert result["bytes"] == total and result["sha256"] == expected
        assert result["seconds"] > 0 and result["mbit_per_s"] > 0
        assert [f["sha256"] for f in result["files"]] == [d.hex() for d in digests]
        assert all(f["status"] == "verified" for f in result["files"])
        assert isinstance(result["retransmitted"], int) and isinstance(result["lost"], int)
    assert "verified" in send.stderr  # the human line goes to stderr with --json
    no_traceback(send)
    no_traceback(recv)


def test_human_output_without_json(tmp_path):
    f = make_file(tmp_path / "data.bin", 100_000)
    with Receiver(tmp_path, "--output", tmp_path / "out", "--once") as recv:
        code, send = run_sender(tmp_path, f, recv.address)
        assert code == 0, send.stderr
        assert recv.wait() == 0
    assert "Mbit/s" in send.stdout and "verified" in send.stdout
    assert "received 1 file" in recv.stdout and "Mbit/s" in recv.stdout


@pytest.mark.slow
def test_two_senders_at_once(tmp_path):
    out = tmp_path / "out"
    a = make_file(tmp_path / "a.bin", 8 * 1024 * 1024)
    b = make_file(tmp_path / "b.bin", 6 * 1024 * 1024 + 5)
    with Receiver(tmp_path, "--output", out) as recv:
        first = sender(tmp_path, a, recv.address, "--max-bw", "8MB/s", name="send-a")
        second = sender(tmp_path, b, recv.address, "--max-bw", "8MB/s", name="send-b")
        # both connections are open before either can finish (each needs about a second)
        wait_for(lambda: recv.stderr.count("connection from") >= 2, what="two connections")
        assert first.wait() == 0, first.stderr
        assert second.wait() == 0, second.stderr
        wait_for(lambda: recv.stdout.count("received 1 file") == 2, what="two reports")
        recv.stop()
        assert recv.popen.returncode == 130
    assert sha256_file(out / "a.bin") == sha256_file(a)
    assert sha256_file(out / "b.bin") == sha256_file(b)
    no_traceback(recv)


@pytest.mark.slow
def test_killed_sender_leaves_server_serving_and_no_partial(tmp_path):
    out = tmp_path / "out"
    big = make_file(tmp_path / "big.bin", 32 * 1024 * 1024)
    with Receiver(tmp_path, "--output", out) as recv:
        victim = sender(tmp_path, big, recv.address, "--max-bw", "4MB/s", name="victim")
        wait_for(
            lambda: any(p.name.startswith(wire.PARTIAL_PREFIX) and p.stat().st_size > 0 for p in out.iterdir()),
            what="a partial file",
        )
        victim.popen.kill()
        victim.popen.wait()
        wait_for(lambda: "failed" in recv.stderr, what="the receiver to notice the dead sender")
        assert "big.bin" in recv.stderr and "partial file discarded" in recv.stderr
        assert list(out.iterdir()) == []
        assert recv.popen.poll() is None  # still serving
        small = make_file(tmp_path / "after.bin", 200_000)
        code, send = run_sender(tmp_path, small, recv.address)
        assert code == 0, send.stderr
        recv.stop()
    assert sorted(p.name for p in out.iterdir()) == ["after.bin"]
    assert sha256_file(out / "after.bin") == sha256_file(small)
    no_traceback(recv)


def test_memory_mode_both_sides_agree(tmp_path):
    with Receiver(tmp_path, "--mem", "--once", "--json") as recv:
        code, send = run_sender(tmp_path, "--mem", "1", recv.address, "--json")
        assert code == 0, send.stderr
        assert recv.wait() == 0, recv.stderr
    sent, got = send.json(), recv.json()
    for result in (sent, got):
        assert JSON_KEYS <= result.keys() and result["mode"] == "memory"
    assert sent["bytes"] == got["bytes"] > 0
    assert sent["sha256"] == got["sha256"]
    assert got["mbit_per_s"] > 0 and sent["mbit_per_s"] > 0


def test_file_server_also_takes_memory_mode_and_mem_server_refuses_files(tmp_path):
    with Receiver(tmp_path, "--output", tmp_path / "out", "--once", name="filesrv") as recv:
        code, send = run_sender(tmp_path, "--mem", "0.3", recv.address)
        assert code == 0, send.stderr
        assert recv.wait() == 0
    assert list((tmp_path / "out").iterdir()) == []
    f = make_file(tmp_path / "f.bin", 1000)
    with Receiver(tmp_path, "--mem", "--once", name="memsrv") as recv:
        code, send = run_sender(tmp_path, f, recv.address, name="send2")
        assert code == 6, send.stderr
        assert "does not accept" in send.stderr
        assert recv.wait() == 8
    no_traceback(send)


def test_ipv6_loopback(tmp_path):
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    f = make_file(tmp_path / "v6.bin", 300_000)
    with Receiver(tmp_path, "--output", tmp_path / "out", "--once", bind="::1") as recv:
        assert recv.address.startswith("[::1]:")
        code, send = run_sender(tmp_path, f, recv.address)
        assert code == 0, send.stderr
        assert recv.wait() == 0
    assert sha256_file(tmp_path / "out" / "v6.bin") == sha256_file(f)


# --------------------------------------------------------------------------- hostile senders


def _raw_session(address: str, records: bytes) -> list[tuple[wire.ReplyStatus, int, bytes]]:
    """Speak the files framing by hand over a real udt connection; return the replies until close."""
    return raw_replies(address, wire.pack_session_header(wire.SessionKind.FILES) + records)


def raw_replies(address: str, data: bytes) -> list[tuple[wire.ReplyStatus, int, bytes]]:
    """Send ``data`` (a session header and records, built by hand) to a receiver over a real udt
    connection; return the replies it sent until it closed."""
    host, port = parse_host_port(address)
    replies = []
    with udt.create_connection((host, port), timeout=10) as conn:
        conn.settimeout(30)
        conn.sendall(data)
        buf = b""
        while True:
            try:
                data = conn.recv(4096)
            except (ConnectionError, OSError):
                break
            if not data:
                break
            buf += data
            while len(buf) >= wire.REPLY.size:
                replies.append(wire.unpack_reply(buf[: wire.REPLY.size]))
                buf = buf[wire.REPLY.size :]
    return replies


@pytest.mark.parametrize("name", ["../evil.bin", "..", "sub/evil.bin", "/tmp/evil.bin"])
def test_path_traversal_names_refused(tmp_path, name):
    out = tmp_path / "out"
    payload = b"owned"
    record = (
        wire.Tag.FILE
        + wire.FILE_HEADER.pack(len(payload), len(name.encode()))
        + name.encode()
        + payload
        + wire.pack_digest(hashlib.sha256(payload).digest())
    )
    with Receiver(tmp_path, "--output", out, "--once") as recv:
        replies = _raw_session(recv.address, record)
        assert recv.wait() == 6
    assert replies and replies[0][0] == wire.ReplyStatus.NAME_REFUSED
    assert "refused file name" in recv.stderr
    assert list(out.iterdir()) == []
    assert not (tmp_path / "evil.bin").exists() and not Path("/tmp/evil.bin").exists()


def test_digest_mismatch_discards_the_file(tmp_path):
    out = tmp_path / "out"
    payload = os.urandom(50_000)
    good = b"good.bin"
    records = (
        wire.Tag.FILE
        + wire.FILE_HEADER.pack(len(payload), 7)
        + b"bad.bin"
        + payload
        + wire.pack_digest(hashlib.sha256(b"something else").digest())
        + wire.Tag.FILE
        + wire.FILE_HEADER.pack(len(payload), len(good))
        + good
        + payload
        + wire.pack_digest(hashlib.sha256(payload).digest())
    )
    digests = [hashlib.sha256(payload).digest()] * 2
    records += wire.pack_end(2, wire.session_digest(digests))
    with Receiver(tmp_path, "--output", out, "--once", "--json") as recv:
        replies = _raw_session(recv.address, records)
        assert recv.wait() == 6
    assert [r[0] for r in replies] == [wire.ReplyStatus.DIGEST_MISMATCH, wire.ReplyStatus.OK, wire.ReplyStatus.OK]
    assert sorted(p.name for p in out.iterdir()) == ["good.bin"]
    result = recv.json()
    assert [f["status"] for f in result["files"]] == ["sha256 mismatch", "verified"]


def test_stream_ending_mid_file_counts_every_byte_that_arrived(tmp_path):
    """A sender gone mid-block: what arrived is counted (not rounded to whole blocks) and the
    partial file is discarded."""
    out = tmp_path / "out"
    arrived = os.urandom(300_000)  # one whole 256 KiB block and part of the next
    record = wire.Tag.FILE + wire.FILE_HEADER.pack(1_000_000, 8) + b"half.bin" + arrived
    with Receiver(tmp_path, "--output", out, "--once", "--json") as recv:
        host, port = parse_host_port(recv.address)
        with udt.create_connection((host, port), timeout=10) as conn:
            conn.sendall(wire.pack_session_header(wire.SessionKind.FILES) + record)
        assert recv.wait() != 0
    result = recv.json()
    assert result["bytes"] == len(arrived), result
    assert "half.bin" in recv.stderr
    assert list(out.iterdir()) == []
    no_traceback(recv)


def test_garbage_session_is_a_protocol_error(tmp_path):
    with Receiver(tmp_path, "--mem", "--once") as recv:
        host, port = parse_host_port(recv.address)
        with udt.create_connection((host, port), timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert recv.wait() == 8
    assert "not a udt-send session" in recv.stderr
    no_traceback(recv)


# --------------------------------------------------------------------------- signals


def test_sigint_idle_server_exits_130(tmp_path):
    with Receiver(tmp_path, "--mem") as recv:
        recv.popen.send_signal(signal.SIGINT)
        assert recv.wait(15) == 130
    assert recv.stderr.strip().endswith("udt-recv: interrupted")
    no_traceback(recv)


def test_sigint_mid_transfer_sender_exits_130_and_server_survives(tmp_path):
    with Receiver(tmp_path, "--mem") as recv:
        proc = sender(tmp_path, "--mem", "60", recv.address)
        wait_for(lambda: "connection from" in recv.stderr, what="the sender to connect")
        proc.popen.send_signal(signal.SIGINT)
        assert proc.wait(15) == 130
        assert "udt-send: interrupted" in proc.stderr
        no_traceback(proc)
        wait_for(lambda: "failed" in recv.stderr, what="the server to drop the session")
        assert recv.popen.poll() is None
        recv.popen.send_signal(signal.SIGTERM)
        assert recv.wait(15) == 143
    no_traceback(recv)


def test_progress_bar_only_on_a_terminal(tmp_path):
    import pty

    f = make_file(tmp_path / "tty.bin", 4 * 1024 * 1024)
    with Receiver(tmp_path, "--output", tmp_path / "out", "--once") as recv:
        leader, follower = pty.openpty()
        try:
            proc = subprocess.Popen(
                cli("send", f, recv.address, "--max-bw", "4MB/s"),
                stdout=subprocess.DEVNULL,
                stderr=follower,
                stdin=subprocess.DEVNULL,
                env=ENV,
                cwd=str(ROOT),
            )
            os.close(follower)
            follower = -1
            seen = b""
            while True:
                try:
                    data = os.read(leader, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                seen += data
            assert proc.wait(WAIT) == 0, seen
        finally:
            os.close(leader)
            if follower >= 0:
                os.close(follower)
        assert recv.wait() == 0
    text = seen.decode(errors="replace")
    assert "\r" in text and "Mbit/s" in text and "ETA" in text and "%" in text


def test_disk_full_is_reported_and_leaves_nothing(tmp_path):
    out = tmp_path / "small-fs"
    out.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(out)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        f = make_file(tmp_path / "too-big.bin", 3 * 1024 * 1024)
        with Receiver(tmp_path, "--output", out, "--once") as recv:
            code, send = run_sender(tmp_path, f, recv.address)
            assert recv.wait() == 7, recv.stderr
        assert code == 6, send.stderr
        assert "could not write" in send.stderr
        assert "disk full" in recv.stderr and "too-big.bin" in recv.stderr
        assert list(out.iterdir()) == []
        no_traceback(send)
        no_traceback(recv)
    finally:
        subprocess.run(["umount", str(out)], check=False)


def _free_udp_ports(count: int) -> list[int]:
    probes = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def test_rendezvous_transfer(tmp_path):
    recv_port, send_port = _free_udp_ports(2)
    f = make_file(tmp_path / "rv.bin", 500_000)
    recv = Proc(
        tmp_path,
        "recv",
        cli(
            "recv",
            "--bind",
            "127.0.0.1",
            "--port",
            recv_port,
            "--rendezvous",
            f"127.0.0.1:{send_port}",
            "--output",
            tmp_path / "out",
            "--json",
        ),
    )
    try:
        wait_for(
            lambda: "rendezvous from" in recv.stderr or recv.popen.poll() is not None,
            what="the rendezvous receiver to bind",
        )
        code, send = run_sender(
            tmp_path, "--rendezvous", "--bind", f"127.0.0.1:{send_port}", f, f"127.0.0.1:{recv_port}", "--json"
        )
        assert code == 0, send.stderr
        assert recv.wait() == 0, recv.stderr
    finally:
        recv.stop()
    assert sha256_file(tmp_path / "out" / "rv.bin") == sha256_file(f)
    assert send.json()["sha256"] == recv.json()["sha256"] == sha256_file(f)


def test_mss_and_max_bw_reach_the_connection(tmp_path):
    f = make_file(tmp_path / "capped.bin", 4 * 1024 * 1024)
    with Receiver(tmp_path, "--output", tmp_path / "out", "--once", "--json", "--mss", "9000") as recv:
        code, send = run_sender(tmp_path, f, recv.address, "--json", "--mss", "9000", "--max-bw", "16Mbit")
        assert code == 0, send.stderr
        assert recv.wait() == 0
    sent, got = send.json(), recv.json()
    assert sent["mss"] == got["mss"] == 9000
    # 4 MiB at 2 MB/s needs about 2.1 s; an uncapped loopback transfer takes a few ms
    assert sent["seconds"] > 1.2, sent
    assert sent["mbit_per_s"] < 16 * 1.3


def test_two_files_with_one_name_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = make_file(tmp_path / "a" / "x.bin", 10), make_file(tmp_path / "b" / "x.bin", 10)
    code, proc = run_sender(tmp_path, first, second, "127.0.0.1:9")
    assert code == 2
    assert "two files named 'x.bin'" in proc.stderr
    code, proc = run_sender(tmp_path, tmp_path / "a", "127.0.0.1:9", name="dir")
    assert code == 7 and "not a regular file" in proc.stderr


def test_server_json_summary_when_stopped(tmp_path):
    f = make_file(tmp_path / "s.bin", 100_000)
    with Receiver(tmp_path, "--output", tmp_path / "out", "--json") as recv:
        for i in range(2):
            code, send = run_sender(tmp_path, f, recv.address, name=f"send{i}")
            assert code == 0, send.stderr
        recv.stop()
        assert recv.popen.returncode == 130
    summary = recv.json()
    assert JSON_KEYS <= summary.keys()
    assert len(summary["sessions"]) == 2 and summary["failed"] == 0
    assert summary["bytes"] == 200_000
    assert all(s["sha256"] == sha256_file(f) for s in summary["sessions"])


def test_sigint_receiver_mid_file_removes_partial_and_sender_reports_loss(tmp_path):
    out = tmp_path / "out"
    big = make_file(tmp_path / "big.bin", 32 * 1024 * 1024)
    with Receiver(tmp_path, "--output", out, "--once") as recv:
        proc = sender(tmp_path, big, recv.address, "--max-bw", "4MB/s", "--timeout", "5")
        wait_for(
            lambda: any(p.name.startswith(wire.PARTIAL_PREFIX) and p.stat().st_size > 0 for p in out.iterdir()),
            what="a partial file",
        )
        recv.popen.send_signal(signal.SIGINT)
        assert recv.wait(15) == 130
        assert list(out.iterdir()) == []
        assert proc.wait() == 5, proc.stderr
    assert "udt-recv: interrupted" in recv.stderr
    assert "lost" in proc.stderr or "closed the connection" in proc.stderr
    no_traceback(recv)
    no_traceback(proc)


def test_idle_sender_is_dropped(tmp_path):
    with Receiver(tmp_path, "--mem", "--once", "--idle-timeout", "1") as recv:
        host, port = parse_host_port(recv.address)
        with udt.create_connection((host, port), timeout=10):
            assert recv.wait() == 4
    assert "sent nothing for 1 s" in recv.stderr
    no_traceback(recv)


@pytest.mark.parametrize("tool", ["udt-send", "udt-recv", "udt-demo"])
def test_console_scripts_are_installed(tool):
    """The commands README and the issues name are entry points of the installed package."""
    import shutil

    path = shutil.which(tool)
    assert path, f"{tool} is not on PATH: pip install . registers it"
    done = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0 and f"usage: {tool}" in done.stdout


def _demo_json(*args: str) -> dict:
    """Run ``udt-demo ARGS --json`` and return its result (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-m", "udt.demo", *args, "--json"], capture_output=True, text=True, timeout=120, env=ENV
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_demo_runs_real_verified_transfers():
    result = _demo_json("--size", "3M", "--mem", "0.3")
    file_run, mem_run = result["file"], result["memory"]
    assert file_run["recv"]["bytes"] == 3 << 20 and file_run["recv"]["files"][0]["status"] == "verified"
    assert file_run["send"]["sha256"] == file_run["recv"]["sha256"]
    assert mem_run["recv"]["bytes"] > 0 and mem_run["send"]["sha256"] == mem_run["recv"]["sha256"]
    assert file_run["recv"]["mbit_per_s"] > 0 and mem_run["recv"]["mbit_per_s"] > 0


def test_demo_with_a_fixed_mss():
    """--mss once went between udt-send's FILE and HOST:PORT: the sender refused its arguments
    and the demo waited 600 s for a receiver nobody would end."""
    result = _demo_json("--size", "1M", "--mem", "0.2", "--mss", "1500")
    assert result["file"]["send"]["mss"] == result["memory"]["send"]["mss"] == 1500
    assert result["file"]["recv"]["files"][0]["status"] == "verified"


# --------------------------------------------------------------------------- honest progress, --json failures


def test_sender_meter_counts_acknowledged_bytes_not_queued():
    from udt.cli._progress import Meter, ProgressBar

    server = udt.create_server(("127.0.0.1", 0), options={udt.UDT_RCVBUF: 256 * 1024})
    try:
        server.settimeout(10)
        with udt.create_connection(server.getsockname(), timeout=10) as client:
            peer, _ = server.accept()
            with peer:
                bar = ProgressBar(enabled=False)
                meter = bar.add(Meter("t", 4 << 20, unacked=lambda: client.getsockopt(udt.UDT_SNDDATA)))
                client.sendall(os.urandom(4 << 20))  # the send buffer takes it all at once
                meter.queued = 4 << 20
                time.sleep(0.3)  # the receiver reads nothing: ACKs stop at its full buffer
                assert bar.moved() <= 512 * 1024, bar.moved()
                received = 0
                while received < 4 << 20:
                    received += len(peer.recv(1 << 20))
                assert wait_for(lambda: bar.moved() == 4 << 20, what="every byte acknowledged")
                assert meter.done == 4 << 20
    finally:
        server.close()


def test_failure_under_json_prints_one_object(tmp_path):
    make_file(tmp_path / "f", 10)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # answers nothing
        silent.bind(("127.0.0.1", 0))
        code, proc = run_sender(
            tmp_path, "--timeout", "1", tmp_path / "f", f"127.0.0.1:{silent.getsockname()[1]}", "--json"
        )
    assert code == 4, proc.stderr
    result = proc.json()
    assert result["exit_code"] == 4 and result["bytes"] == 0 and "no answer" in result["error"]
    with Receiver(tmp_path, "--mem", "--once") as first:  # its port is taken: the second cannot bind
        port = parse_host_port(first.address)[1]
        taken = Proc(tmp_path, "taken", cli("recv", "--port", port, "--bind", "127.0.0.1", "--mem", "--json"))
        assert taken.wait() == 9, taken.stderr
    failed = taken.json()
    assert failed["exit_code"] == 9 and failed["bytes"] == 0 and "cannot listen" in failed["error"]
    no_traceback(proc)


def test_sender_whose_receiver_dies_reports_acknowledged_bytes(tmp_path):
    out = tmp_path / "out"
    big = make_file(tmp_path / "big.bin", 32 * 1024 * 1024)
    with Receiver(tmp_path, "--output", out, "--once", "--json") as recv:
        proc = sender(tmp_path, big, recv.address, "--max-bw", "4MB/s", "--timeout", "5", "--json")
        wait_for(
            lambda: any(p.name.startswith(wire.PARTIAL_PREFIX) and p.stat().st_size > 1 << 20 for p in out.iterdir()),
            what="a partial file",
        )
        recv.popen.send_signal(signal.SIGINT)
        assert recv.wait(15) == 130
        code = proc.wait()
    assert code == 5, proc.stderr
    sent, got = proc.json(), recv.json()
    assert sent["exit_code"] == 5 and sent["error"]
    assert got["exit_code"] == 130 and got["error"] == "interrupted"
    # the receiver counts what reached the file, the sender what the receiver acknowledged
    assert 1 << 20 < got["bytes"] < big.stat().st_size
    assert 0 < sent["bytes"] < big.stat().st_size
    assert "in big.bin: 0 B of" not in recv.stderr, recv.stderr
    no_traceback(recv)
    no_traceback(proc)
