"""Drivers for the real third-party peers udt must interoperate with: UDT4 and SRT.

Each peer runs in its own process, so a crash or hang of a C++ library (UDT4 inside
``udt4py-ng``, SRT inside ``srt-file-transmit``) can never take the calling process down.
Every wait has a timeout, and :class:`PeerProcess` is a context manager that always kills
and reaps its child.

A peer process prints JSON lines on stdout: first ``{"event": "ready", "port": P, ...}`` once
its socket is bound (so callers may pass port 0 and learn the port), and last
``{"event": "done", "bytes": N, "sha256": "...", "seconds": S, "mb_per_s": R, ...}``.

From Python::

    with peers.udt4(action="recv", sock_type="dgram", mss=9000) as server:
        port = server.ready()["port"]
        ...                                   # connect udt to ("127.0.0.1", port), send
        report = server.result(timeout=60)    # {"bytes": ..., "sha256": ..., ...}

From the shell (benchmarks compare udt with UDT4 and SRT in one run)::

    python -m udt.tools.peers udt4-recv --port 9000 --bytes 100000000
    python -m udt.tools.peers udt4-send --connect 127.0.0.1:9000 --bytes 100000000
    python -m udt.tools.peers srt-recv --port 9001 --output /tmp/out.bin
    python -m udt.tools.peers srt-send --connect 127.0.0.1:9001 --input /tmp/in.bin

Payloads sent with ``--bytes N`` follow :func:`pattern_chunks` (deterministic for a seed), so
the other side, whoever it is, can check them with :func:`pattern_sha256`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "PeerError",
    "PeerProcess",
    "udt4",
    "srt_recv",
    "srt_send",
    "udt4_unavailable_reason",
    "srt_unavailable_reason",
    "pattern_chunks",
    "pattern_bytes",
    "pattern_sha256",
    "free_udp_port",
    "file_sha256",
]

PATTERN_BLOCK = 1 << 20
"""Size of the pseudo-random block the payload pattern is built from."""

DEFAULT_TIMEOUT = 120.0
SRT_TOOL = "srt-file-transmit"
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


class PeerError(RuntimeError):
    """A peer process failed, timed out, or printed something that is not its report."""


# --------------------------------------------------------------------------- payload pattern
def pattern_chunks(nbytes: int, seed: int = 0, chunk: int = PATTERN_BLOCK) -> Iterator[bytes]:
    """Yield ``nbytes`` of deterministic pseudo-random data in pieces of at most ``chunk`` bytes.

    Block ``i`` (of :data:`PATTERN_BLOCK` bytes) is a random block for ``seed`` whose first 8
    bytes are replaced by ``i``, so reordering, duplication or loss of whole blocks changes the
    digest too, and generating a GiB costs no more than copying it.
    """
    if nbytes < 0 or chunk <= 0:
        raise ValueError("nbytes must be >= 0 and chunk > 0")
    base = bytearray(random.Random(seed).randbytes(PATTERN_BLOCK))
    produced = 0
    block_index = 0
    while produced < nbytes:
        base[:8] = block_index.to_bytes(8, "big")
        block = bytes(base)
        view = memoryview(block)[: min(PATTERN_BLOCK, nbytes - produced)]
        for start in range(0, len(view), chunk):
            piece = view[start : start + chunk]
            yield bytes(piece)
        produced += len(view)
        block_index += 1


def pattern_bytes(nbytes: int, seed: int = 0) -> bytes:
    """The whole pattern of :func:`pattern_chunks` as one bytes object (for small sizes)."""
    return b"".join(pattern_chunks(nbytes, seed))


def pattern_sha256(nbytes: int, seed: int = 0) -> str:
    """Hex sha256 of ``pattern_bytes(nbytes, seed)`` without holding it in memory."""
    digest = hashlib.sha256()
    for piece in pattern_chunks(nbytes, seed):
        digest.update(piece)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(size, hex sha256) of a file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while piece := f.read(PATTERN_BLOCK):
            digest.update(piece)
            size += len(piece)
    return size, digest.hexdigest()


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port that was free a moment ago (for peers that cannot report the port they bound)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


# --------------------------------------------------------------------------- availability
def udt4_unavailable_reason() -> str | None:
    """None when the UDT4 peer (``udt4py``) can be imported in a child process, else why not."""
    try:
        proc = subprocess.run([sys.executable, "-c", "import udt4py"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {sys.executable}: {exc}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"udt4py-ng is not installed (pip install udt4py-ng): {last}"
    return None


def srt_unavailable_reason() -> str | None:
    """None when ``srt-file-transmit`` is on PATH, else why not."""
    if shutil.which(SRT_TOOL) is None:
        return f"{SRT_TOOL} is not installed (apt-get install srt-tools)"
    return None


# --------------------------------------------------------------------------- parent side
class PeerProcess:
    """A peer running as a child process that speaks the JSON-lines protocol above.

    Use as a context manager: leaving the block kills the child if it still runs and reaps it.
    """

    def __init__(self, argv: list[str], timeout: float = DEFAULT_TIMEOUT, name: str = "peer"):
        self.argv = argv
        self.name = name
        self.timeout = timeout
        self._lines: list[dict[str, Any]] = []
        self._stderr: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # our kill reaches the whole group (srt child included)
        )
        self._readers = [
            threading.Thread(target=self._read_stdout, name=f"{name}-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name=f"{name}-stderr", daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                obj = {"event": "text", "text": line}
            with self._cond:
                self._lines.append(obj)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        """What the child wrote on stderr so far (for failure messages)."""
        return "\n".join(self._stderr[-40:])

    def _wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for obj in self._lines:
                    if obj.get("event") == event:
                        return obj
                    if obj.get("event") == "error":
                        raise PeerError(f"{self.name} failed: {obj.get('error')}\n{self.stderr}")
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    break
                self._cond.wait(remaining)
        if not self._eof:
            raise PeerError(f"{self.name}: no {event!r} within {timeout:.1f} s\n{self.stderr}")
        rc = self.proc.wait(timeout=5)
        raise PeerError(f"{self.name} exited with {rc} before {event!r}\n{self.stderr}")

    def ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the peer has bound its socket; returns the ready line (has ``port``)."""
        return self._wait_event("ready", timeout)

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the final report and the child's exit; raises :class:`PeerError` on failure."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        report = self._wait_event("done", timeout)
        try:
            rc = self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise PeerError(f"{self.name} reported but did not exit\n{self.stderr}") from None
        if rc != 0:
            raise PeerError(f"{self.name} exited with {rc}\n{self.stderr}")
        return report

    def kill(self) -> None:
        """Kill the child and everything in its process group, and reap it.

        The group is killed even when the child itself has already exited (say, by its own
        timeout): a tool it started (srt-file-transmit) may still be running in it.
        """
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # nothing left in the group
        self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


def _module_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "udt.tools.peers", *args]


def udt4(
    action: Literal["send", "recv"],
    *,
    connect: tuple[str, int] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    rendezvous: bool = False,
    sock_type: Literal["stream", "dgram"] = "stream",
    mss: int = 1500,
    nbytes: int | None = None,
    path: str | os.PathLike[str] | None = None,
    api: Literal["mem", "file"] = "mem",
    msg_size: int = 65536,
    seed: int = 0,
    hold: float = 0.0,
    timeout: float = DEFAULT_TIMEOUT,
) -> PeerProcess:
    """Start a UDT4 peer (the reference C++ library via udt4py-ng) in a child process.

    Without ``connect`` it listens on (host, port) and serves one connection; with ``connect``
    it connects there; with ``rendezvous`` it binds (host, port) and rendezvous-connects to
    ``connect`` (which is then required). ``action`` says whether it sends or receives.
    The payload is ``nbytes`` of :func:`pattern_chunks` or the file ``path``; a receiver
    without ``nbytes`` reads until the peer closes. ``api="file"`` uses UDT4's sendfile /
    recvfile (STREAM only; recvfile needs ``nbytes``). In DGRAM mode the sender sends
    messages of ``msg_size`` bytes. ``hold`` keeps the connection idle that many seconds
    before closing (keep-alives). ``timeout`` bounds the child's whole life.
    """
    if action not in ("send", "recv"):
        raise ValueError("action must be 'send' or 'recv'")
    if rendezvous and connect is None:
        raise ValueError("rendezvous needs connect=(peer_host, peer_port)")
    args = [
        f"udt4-{action}",
        "--host",
        host,
        "--port",
        str(port),
        "--type",
        sock_type,
        "--mss",
        str(mss),
        "--api",
        api,
        "--msg-size",
        str(msg_size),
        "--seed",
        str(seed),
        "--hold",
        str(hold),
        "--timeout",
        str(timeout),
    ]
    if connect is not None:
        args += ["--connect", f"{connect[0]}:{connect[1]}"]
    if rendezvous:
        args.append("--rendezvous")
    if nbytes is not None:
        args += ["--bytes", str(nbytes)]
    if path is not None:
        args += ["--file", str(path)]
    return PeerProcess(_module_argv(*args), timeout=timeout + 10, name=f"udt4-{action}")


def srt_recv(
    port: int,
    output: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    timeout: float = DEFAULT_TIMEOUT,
) -> PeerProcess:
    """Start ``srt-file-transmit`` as a listener on (host, port) that writes what it receives
    to ``output`` (file mode: on the wire it is UDT4, DGRAM socket type)."""
    args = ["srt-recv", "--host", host, "--port", str(port), "--output", str(output), "--timeout", str(timeout)]
    return PeerProcess(_module_argv(*args), timeout=timeout + 10, name="srt-recv")


def srt_send(
    connect: tuple[str, int],
    input_path: str | os.PathLike[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> PeerProcess:
    """Start ``srt-file-transmit`` as a caller that sends the file ``input_path`` to ``connect``."""
    args = [
        "srt-send",
        "--connect",
        f"{connect[0]}:{connect[1]}",
        "--input",
        str(input_path),
        "--timeout",
        str(timeout),
    ]
    return PeerProcess(_module_argv(*args), timeout=timeout + 10, name="srt-send")


# --------------------------------------------------------------------------- child side
def _emit(**obj: Any) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def _parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _report(nbytes: int, digest: str, seconds: float, **extra: Any) -> None:
    """Print the final line; ``seconds`` covers the transfer only (not hashing a file after it)."""
    _emit(
        event="done",
        bytes=nbytes,
        sha256=digest,
        seconds=round(seconds, 6),
        mb_per_s=round(nbytes / 1e6 / seconds, 3) if seconds > 0 else None,
        **extra,
    )


def _udt4_open(opts: argparse.Namespace) -> tuple[Any, Any]:
    """Set up the UDT4 connection described by ``opts``; returns (connection, listener)."""
    import udt4py  # imported here: only the child process loads the C++ library

    sock_type = socket.SOCK_STREAM if opts.type == "stream" else socket.SOCK_DGRAM
    family = _family(opts.connect[0] if opts.connect and not opts.rendezvous else opts.host)
    sock = udt4py.UDTSocket(family, sock_type)
    sock.UDT_MSS = opts.mss
    sock.UDT_LINGER = max(1, int(opts.timeout))  # bounded close: never UDT4's 180 s
    if opts.connect is not None and not opts.rendezvous:
        _emit(event="ready", port=None, role="client")
        sock.connect(opts.connect)
        return sock, None
    if opts.rendezvous:
        sock.UDT_RENDEZVOUS = True
        sock.bind((opts.host, opts.port))
        _emit(event="ready", port=sock.address[1], role="rendezvous")
        sock.connect(opts.connect)
        return sock, None
    sock.bind((opts.host, opts.port))
    sock.listen(1)
    _emit(event="ready", port=sock.address[1], role="server")
    conn, _addr = sock.accept()
    return conn, sock


def _udt4_send(opts: argparse.Namespace, conn: Any) -> tuple[int, str]:
    digest = hashlib.sha256()
    total = 0
    if opts.api == "file":
        size = os.path.getsize(opts.file)
        sent = conn.sendfile(opts.file, 0, size)
        if sent != size:
            raise PeerError(f"sendfile sent {sent} of {size} bytes")
        return file_sha256(opts.file)
    if opts.file is not None:

        def source() -> Iterator[bytes]:
            with open(opts.file, "rb") as f:
                while piece := f.read(PATTERN_BLOCK):
                    yield piece
    else:

        def source() -> Iterator[bytes]:
            return pattern_chunks(opts.bytes or 0, opts.seed)

    for block in source():
        digest.update(block)
        view = memoryview(block)
        if opts.type == "stream":
            while view:
                sent = conn.send(view)
                view = view[sent:]
        else:
            for start in range(0, len(view), opts.msg_size):
                message = view[start : start + opts.msg_size]
                if conn.sendmsg(message) != len(message):
                    raise PeerError("sendmsg sent part of a message")
        total += len(block)
    return total, digest.hexdigest()


def _udt4_recv(opts: argparse.Namespace, conn: Any) -> tuple[int, str, int, float]:
    """Receive per ``opts``; returns (bytes, sha256, calls, monotonic time of the last byte)."""
    import udt4py

    if opts.api == "file":
        if opts.bytes is None or opts.file is None:
            raise PeerError("recvfile needs --bytes and --file")
        got = conn.recvfile(opts.file, 0, opts.bytes)
        finished = time.monotonic()
        size, digest_hex = file_sha256(opts.file)
        return size, digest_hex, got, finished
    digest = hashlib.sha256()
    total = 0
    messages = 0
    buf = bytearray(max(opts.msg_size, 1 << 20))
    out = open(opts.file, "wb") if opts.file is not None else None
    try:
        while opts.bytes is None or total < opts.bytes:
            want = len(buf) if opts.bytes is None or opts.type == "dgram" else min(len(buf), opts.bytes - total)
            try:
                got = conn.recv(memoryview(buf)[:want]) if opts.type == "stream" else conn.recvmsg(buf)
            except udt4py.UDTException as exc:
                if opts.bytes is None and exc.error_code in (2001, 2002):
                    break  # the peer closed: end of a transfer of unknown length
                raise PeerError(
                    f"{exc} after {total} of {opts.bytes} bytes "
                    f"({messages} {'messages' if opts.type == 'dgram' else 'reads'})"
                ) from exc
            if got <= 0:
                break
            digest.update(memoryview(buf)[:got])
            if out is not None:
                out.write(memoryview(buf)[:got])
            total += got
            messages += 1
    finally:
        if out is not None:
            out.close()
    return total, digest.hexdigest(), messages, time.monotonic()


FULL_ACK_WAIT = 0.1
"""Seconds a UDT4 sender waits after its buffer drained before closing (10 SYN intervals)."""


def _udt4_drain(conn: Any, timeout: float) -> float:
    """Wait until everything sent is acknowledged, then until a full ACK has surely covered it.

    UDT4 frees send buffer space on a *light* ACK too, while its receiver makes data readable
    only on a *full* ACK and refuses to read anything once the shutdown has arrived: a sender
    that closes right after the last light ACK loses the tail of the transfer at a UDT4
    receiver. Waiting a few SYN intervals after the drain avoids that.
    """
    import udt4py

    deadline = time.monotonic() + timeout
    try:
        while conn.UDT_SNDDATA > 0 and time.monotonic() < deadline:
            time.sleep(0.002)
    except udt4py.UDTException:
        return time.monotonic()  # the receiver has closed already: it has everything it wanted
    drained = time.monotonic()
    time.sleep(FULL_ACK_WAIT)
    return drained


def _run_udt4(opts: argparse.Namespace, action: str) -> int:
    import udt4py

    conn, listener = _udt4_open(opts)
    try:
        started = time.monotonic()
        if action == "send":
            total, digest_hex = _udt4_send(opts, conn)
            finished = _udt4_drain(conn, opts.timeout)  # everything acknowledged
            extra: dict[str, Any] = {}
        else:
            total, digest_hex, calls, finished = _udt4_recv(opts, conn)
            extra = {} if opts.api == "file" else {"messages" if opts.type == "dgram" else "recv_calls": calls}
        if opts.hold > 0:
            time.sleep(opts.hold)
        try:
            conn.close()  # a sender's close waits (bounded by linger) until the peer has it all
        except udt4py.UDTException as exc:
            # The peer closed first (it had what it wanted): UDT4 reports the socket broken or
            # gone. The receiver's sha256 is what proves the transfer, so only record it.
            extra["close_error"] = str(exc)
        _report(total, digest_hex, finished - started, peer="udt4", type=opts.type, mss=opts.mss, **extra)
    finally:
        if listener is not None:
            listener.close()
    return 0


def _die_with_parent() -> None:
    """In the forked child: ask Linux to SIGKILL it when the peer driver dies, however that
    happens, so no srt-file-transmit outlives the process that started it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the process group kill in PeerProcess.kill still applies


def _wait_udp_bound(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until some process has UDP ``port`` bound (srt-file-transmit cannot report it)."""
    deadline = time.monotonic() + timeout
    needle = f":{port:04X} "
    while time.monotonic() < deadline:
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                with open(table) as f:
                    next(f)
                    if any(line.split()[1].endswith(needle.strip()) for line in f):
                        return
            except OSError:
                continue
        if proc.poll() is not None:
            raise PeerError(f"{SRT_TOOL} exited with {proc.returncode} before binding")
        time.sleep(0.01)
    raise PeerError(f"{SRT_TOOL} did not bind UDP port {port} within {timeout} s")


def _run_srt(opts: argparse.Namespace, action: str) -> int:
    tool = shutil.which(SRT_TOOL)
    if tool is None:
        raise PeerError(f"{SRT_TOOL} is not installed (apt-get install srt-tools)")
    if action == "recv":
        port = opts.port or free_udp_port(opts.host)
        output = Path(opts.output).resolve()
        host = f"[{opts.host}]" if ":" in opts.host else opts.host
        # srt-file-transmit names the file it writes after the caller's stream id (an SRT
        # caller sends its input's file name) or, without one (a UDT4-style caller), after the
        # output URI: let it write into a private directory and move the one file it makes.
        spool = Path(tempfile.mkdtemp(prefix=".srt-recv-", dir=output.parent))
        argv = [tool, "-q", f"srt://{host}:{port}?mode=listener&transtype=file", f"file://{spool}/{output.name}"]
    else:
        chost, cport = opts.connect
        host = f"[{chost}]" if ":" in chost else chost
        argv = [tool, "-q", f"file://{Path(opts.input).resolve()}", f"srt://{host}:{cport}?transtype=file"]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
    )
    try:
        if action == "recv":
            _wait_udp_bound(port, proc, timeout=10.0)
            _emit(event="ready", port=port, role="listener")
            started = time.monotonic()
        else:
            _emit(event="ready", port=None, role="caller")
        out, _ = proc.communicate(timeout=opts.timeout)
        finished = time.monotonic()
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise PeerError(f"{SRT_TOOL} did not finish within {opts.timeout} s") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        written = list(spool.iterdir()) if action == "recv" else []
        if len(written) == 1:
            written[0].replace(output)
        if action == "recv":
            shutil.rmtree(spool, ignore_errors=True)
    log = out.decode(errors="replace").strip()
    if action == "recv" and len(written) != 1:
        raise PeerError(f"{SRT_TOOL} wrote {len(written)} files, expected 1: {log[-2000:]}")
    if proc.returncode != 0:
        raise PeerError(f"{SRT_TOOL} exited with {proc.returncode}: {log[-2000:]}")
    if action == "send" and "File sent" not in log:
        # srt-file-transmit exits with 0 even when it never connected ("Target disconnected")
        raise PeerError(f"{SRT_TOOL} did not send the file: {log[-2000:] or 'no output'}")
    path = opts.output if action == "recv" else opts.input
    size, digest_hex = file_sha256(path)
    _report(size, digest_hex, finished - started, peer="srt", log=log[-500:])
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m udt.tools.peers", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for action in ("send", "recv"):
        verb = "sends" if action == "send" else "receives"
        p = sub.add_parser(f"udt4-{action}", help=f"UDT4 (udt4py-ng) peer that {verb} (serves, connects or rendezvous)")
        p.add_argument("--host", default="127.0.0.1", help="local address to bind (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=0, help="local port (0: any; reported as ready)")
        p.add_argument("--connect", type=_parse_hostport, help="HOST:PORT to connect to (else listen)")
        p.add_argument("--rendezvous", action="store_true", help="rendezvous-connect to --connect")
        p.add_argument("--type", choices=("stream", "dgram"), default="stream")
        p.add_argument("--mss", type=int, default=1500)
        p.add_argument("--bytes", type=int, help="payload size (pattern); receiver: stop after it")
        p.add_argument("--file", help="send this file / write what is received to it")
        p.add_argument(
            "--api", choices=("mem", "file"), default="mem", help="file: UDT4 sendfile/recvfile instead of send/recv"
        )
        p.add_argument("--msg-size", type=int, default=65536, help="DGRAM message size")
        p.add_argument("--seed", type=int, default=0, help="pattern seed")
        p.add_argument("--hold", type=float, default=0.0, help="idle seconds before close")
        p.add_argument(
            "--timeout", type=float, default=DEFAULT_TIMEOUT, help="the process kills itself after this many seconds"
        )
    p = sub.add_parser("srt-recv", help="srt-file-transmit listener writing to --output")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--output", required=True)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    p = sub.add_parser("srt-send", help="srt-file-transmit caller sending --input")
    p.add_argument("--connect", type=_parse_hostport, required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the peer processes; prints JSON lines, exits non-zero on failure."""
    opts = _build_parser().parse_args(argv)
    # The C++ libraries block in calls a Python signal handler cannot interrupt: let SIGALRM's
    # default action end the process instead, so no peer outlives its timeout.
    kind, _, action = opts.command.partition("-")
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    # srt-* drivers bound their tool themselves and report it: their alarm is only a backstop.
    signal.alarm(max(1, int(opts.timeout + 0.999)) + (10 if kind == "srt" else 0))
    try:
        if kind == "udt4":
            if opts.bytes is None and opts.file is None and action == "send":
                raise PeerError("udt4-send needs --bytes or --file")
            if opts.api == "file" and opts.type != "stream":
                raise PeerError("UDT4 sendfile/recvfile work in STREAM mode only")
            return _run_udt4(opts, action)
        return _run_srt(opts, action)
    except Exception as exc:  # report any failure as JSON for the parent, then fail
        traceback.print_exc()
        _emit(event="error", error=f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
