"""What ``udt-send`` and ``udt-recv`` share: exit codes, argument parsing, sockets, supervision.

The transfer itself runs in a worker thread; the main thread only draws the progress bar and
waits, so Ctrl-C (or SIGTERM) is always noticed at once even while the worker sits in a blocking
socket call.  On interruption the main thread closes the worker's sockets, waits briefly for it,
prints one short line and exits 130 (143 for SIGTERM) without a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import socket as _pysocket
import sys
import textwrap
import threading
import traceback
from collections.abc import Callable
from enum import IntEnum
from types import FrameType
from typing import Any, TypeVar

import udt
import udt.cc
from udt.options import MAX_MSS, MIN_MSS, SocketOption
from udt.units import RATES_HELP, SIZES_HELP

T = TypeVar("T")
# what signal.signal() returns and accepts back
_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class ExitCode(IntEnum):
    """Process exit codes of both tools (listed in their --help)."""

    OK = 0
    FAILURE = 1  # unexpected internal error
    USAGE = 2  # bad command line (argparse's own code)
    CONNECT_FAILED = 3  # refused, rejected, unreachable or unknown host
    TIMEOUT = 4  # no answer to the handshake, or the peer stopped answering
    PEER_LOST = 5  # the connection broke mid-transfer (peer died, network gone)
    VERIFY_FAILED = 6  # sha256 mismatch, or the receiver refused a file
    FILE_ERROR = 7  # a local file cannot be read or written (missing, permissions, disk full)
    PROTOCOL_ERROR = 8  # the peer does not speak this tool's protocol (or its version)
    BIND_FAILED = 9  # cannot bind or listen on the local address
    INTERRUPTED = 130  # Ctrl-C (SIGINT)
    TERMINATED = 143  # SIGTERM


EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    internal error
  2    bad arguments
  3    connection refused, rejected, unreachable or unknown host
  4    timed out (no answer to the handshake, or the peer stopped answering)
  5    connection lost mid-transfer (the peer died or the network went away)
  6    verification failed (sha256 mismatch) or the receiver refused a file
  7    local file error (cannot read or write, disk full)
  8    protocol error (the peer is not udt-send/udt-recv or speaks another version)
  9    cannot bind or listen on the local address
  130  interrupted (Ctrl-C)
  143  terminated (SIGTERM)"""

UNITS_HELP = textwrap.fill(f"units: {RATES_HELP}; {SIZES_HELP}.", 100)


class CliError(Exception):
    """A failure with a message for the user and the exit code that goes with it."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Interrupted(Exception):
    """The user interrupted the tool; the message has been printed already."""

    def __init__(self, code: ExitCode) -> None:
        super().__init__(code.name)
        self.code = code


class _Terminated(BaseException):
    """Raised in the main thread by our SIGTERM handler."""


# --------------------------------------------------------------------------- argument parsing


def parse_host_port(text: str, *, allow_zero: bool = False) -> tuple[str, int]:
    """``"host:9000"``, ``"10.0.0.1:9000"`` or ``"[::1]:9000"`` → (host, port)."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise ValueError(f"invalid address {text!r}: write IPv6 as [ADDR]:PORT")
        host, port_text = text[1:close], text[close + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"invalid address {text!r}: expected HOST:PORT")
        if ":" in host:
            raise ValueError(f"invalid address {text!r}: write IPv6 as [ADDR]:PORT")
    return host, parse_port(port_text, allow_zero=allow_zero)


def parse_port(text: str, *, allow_zero: bool = True) -> int:
    if not text.isdigit():
        raise ValueError(f"invalid port {text!r}")
    port = int(text)
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return port


def parse_seconds(text: str) -> float:
    """A positive duration in seconds (fractions allowed)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"invalid duration {text!r}") from None
    if not 0 < value < 1e7:
        raise ValueError(f"duration must be positive, got {text!r}")
    return value


def parse_count(text: str) -> int:
    """A positive integer."""
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return int(text)


MSS_AUTO = 0
"""What ``--mss auto`` parses to: path-MTU discovery (``UDT_PMTUD``), the default between udt peers."""


def parse_mss(text: str) -> int:
    """UDT's MSS counts the whole IP packet (protocol.md §8); the limits are ``udt.options``'.
    ``auto`` is MSS_AUTO: discover the path's MTU; a number fixes the MSS."""
    if text == "auto":
        return MSS_AUTO
    if not text.isdigit() or not MIN_MSS <= int(text) <= MAX_MSS:
        raise ValueError(f"invalid MSS {text!r}: an integer from {MIN_MSS} to {MAX_MSS} (bytes per IP packet)")
    return int(text)


def argtype(fn: Callable[[str], T], name: str | None = None) -> Callable[[str], T]:
    """Adapt a ValueError-raising parser so argparse prints its message and exits 2."""
    import argparse

    def convert(text: str) -> T:
        try:
            return fn(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name or fn.__name__.removeprefix("parse_")
    return convert


def add_transport_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both ends take alike: segment size and congestion control."""
    parser.add_argument(
        "--mss",
        type=argtype(parse_mss),
        metavar="BYTES|auto",
        help="UDT maximum segment size, whole IP packet (fixed); auto (the default): start at 1500 "
        "and grow to the path's MTU between udt peers",
    )
    parser.add_argument(
        "--cc",
        choices=udt.cc.available(),
        help=f"congestion control (default {udt.cc.DEFAULT_CC}); bbr tolerates random loss",
    )


def format_address(addr: tuple[Any, ...]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def mbit_per_s(nbytes: int, seconds: float) -> float:
    return nbytes * 8 / seconds / 1e6 if seconds > 0 else 0.0


# --------------------------------------------------------------------------- sockets


def resolve(host: str, port: int, *, passive: bool = False) -> tuple[int, tuple]:
    """Resolve to (address family, socket address); unknown hosts are a connection failure."""
    try:
        infos = _pysocket.getaddrinfo(
            host or None, port, 0, _pysocket.SOCK_DGRAM, 0, _pysocket.AI_PASSIVE if passive else 0
        )
    except _pysocket.gaierror as exc:
        raise CliError(ExitCode.CONNECT_FAILED, f"cannot resolve {host!r}: {exc.strerror}") from None
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (_pysocket.AF_INET, _pysocket.AF_INET6):
            return family, sockaddr[:2] if family == _pysocket.AF_INET else sockaddr
    raise CliError(ExitCode.CONNECT_FAILED, f"{host!r} has no IPv4 or IPv6 address")


def new_socket(
    family: int,
    *,
    mss: int | None,
    max_bw: int | None,
    rendezvous: bool = False,
    cc: str | None = None,
    passphrase: str | None = None,
) -> udt.socket:
    """A udt stream socket with the options the command line asked for (set before bind)."""
    sock = udt.socket(family, udt.SOCK_STREAM)
    try:
        if passphrase is not None:
            sock.setsockopt(SocketOption.UDT_PASSPHRASE, passphrase)
        if mss == MSS_AUTO:
            sock.setsockopt(SocketOption.UDT_PMTUD, True)
        elif mss is not None:
            sock.setsockopt(SocketOption.UDT_MSS, mss)
        if max_bw is not None:
            sock.setsockopt(SocketOption.UDT_MAXBW, max_bw)
        if rendezvous:
            sock.setsockopt(SocketOption.UDT_RENDEZVOUS, True)
        if cc is not None:
            sock.setsockopt(SocketOption.UDT_CC, cc)
    except ValueError as exc:
        sock.close()
        raise CliError(ExitCode.USAGE, f"invalid socket option: {exc}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def negotiated_mss(sock: udt.socket, requested: int | None) -> int | None:
    """The MSS the connection ended up with (the smaller of both sides' after the handshake)."""
    try:
        return int(sock.getsockopt(SocketOption.UDT_MSS))
    except OSError:
        return requested


def abort_socket(sock: udt.socket) -> None:
    """Close a socket another thread may be blocked on, without lingering (linger 0 aborts)."""
    for action in (
        lambda: sock.setsockopt(SocketOption.UDT_LINGER, 0),
        lambda: sock.shutdown(_pysocket.SHUT_RDWR),
        sock.close,
    ):
        try:
            action()
        except (OSError, ValueError):
            pass


def perf_summary(sock: udt.socket, *, sender: bool) -> dict[str, int | float | None]:
    """The perfmon figures the reports show (keys of ``Connection.perfmon``, UDT4's TRACEINFO)."""
    try:
        stats = sock.perfmon()
    except OSError:
        return {"retransmitted": None, "lost": None}
    return {
        "retransmitted": stats["pkt_retrans_total"],
        "lost": stats["pkt_snd_loss_total"] if sender else stats["pkt_rcv_loss_total"],
        "rtt_ms": stats["ms_rtt"],
        "bandwidth_mbit_per_s": stats["mbps_bandwidth"],
        "packets_sent": stats["pkt_sent_total"],
        "packets_received": stats["pkt_recv_total"],
    }


def network_error(exc: BaseException, peer: str, *, connecting: bool) -> CliError:
    """Turn a socket exception into the user's message and exit code."""
    if isinstance(exc, CliError):
        return exc
    detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        what = "no answer from" if connecting else "timed out talking to"
        return CliError(ExitCode.TIMEOUT, f"{what} {peer}: {detail}")
    if isinstance(exc, ConnectionRefusedError):
        return CliError(ExitCode.CONNECT_FAILED, f"connection to {peer} refused: {detail}")
    if connecting:
        return CliError(ExitCode.CONNECT_FAILED, f"cannot connect to {peer}: {detail}")
    if isinstance(exc, EOFError):
        return CliError(ExitCode.PEER_LOST, f"{peer} closed the connection mid-transfer")
    return CliError(ExitCode.PEER_LOST, f"connection to {peer} lost: {detail}")


def file_error(exc: OSError, path: str, verb: str) -> CliError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return CliError(ExitCode.FILE_ERROR, f"cannot {verb} {path}: disk full")
    return CliError(ExitCode.FILE_ERROR, f"cannot {verb} {path}: {exc.strerror or exc}")


def recv_exact(sock: udt.socket, size: int) -> bytes:
    """Exactly ``size`` bytes from a stream socket; EOFError if the peer closes first."""
    buf = bytearray(size)
    view = memoryview(buf)
    while view:
        n = sock.recv_into(view)
        if not n:
            raise EOFError("peer closed the connection")
        view = view[n:]
    return bytes(buf)


# --------------------------------------------------------------------------- supervision


class Cancel:
    """Shared between the main thread and the workers: a flag plus the sockets to abort."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[udt.socket] = set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def register(self, sock: udt.socket) -> None:
        with self._lock:
            self._sockets.add(sock)
            cancelled = self._event.is_set()
        if cancelled:
            abort_socket(sock)

    def unregister(self, sock: udt.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def cancel(self) -> None:
        """Set the flag and abort every registered socket.

        The aborts run in a daemon thread: a socket call can block on the socket's own lock
        (held by a connect in progress), and the main thread must stay free to give up and exit.
        """
        with self._lock:
            self._event.set()
            sockets = list(self._sockets)

        def abort_all() -> None:
            for sock in sockets:
                abort_socket(sock)

        threading.Thread(target=abort_all, name="udt-cli-abort", daemon=True).start()


def supervise(
    prog: str,
    job: Callable[[], T],
    cancel: Cancel,
    tick: Callable[[], None] | None = None,
    *,
    tick_interval: float = 0.2,
    grace: float = 5.0,
) -> T:
    """Run ``job`` in a worker thread; call ``tick`` (progress drawing) while it runs.

    On SIGINT/SIGTERM: cancel, wait up to ``grace`` seconds for the worker, print one line and
    raise Interrupted.  A worker still stuck after that ends the process with os._exit.
    """
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = job()
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc
        finally:
            finished.set()

    # Wait on an Event, never on Thread.join: a KeyboardInterrupt landing inside join() makes
    # CPython 3.11 mark the still-running thread as stopped (bpo-45274's fix releases its state
    # lock), and the process would then exit under the worker's feet, leaving partial files.
    worker = threading.Thread(target=run, name=f"{prog}-worker")
    previous_term = _install_sigterm()
    try:
        worker.start()
        while not finished.wait(tick_interval):
            if tick is not None:
                tick()
    except (KeyboardInterrupt, _Terminated) as exc:
        code = ExitCode.INTERRUPTED if isinstance(exc, KeyboardInterrupt) else ExitCode.TERMINATED
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave a traceback
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cancel.cancel()
        done = finished.wait(grace)
        word = "interrupted" if code == ExitCode.INTERRUPTED else "terminated"
        print(f"\r\x1b[K{prog}: {word}" if sys.stderr.isatty() else f"{prog}: {word}", file=sys.stderr, flush=True)
        if not done:
            sys.stdout.flush()
            os._exit(code)
        worker.join()
        raise Interrupted(code) from None
    finally:
        _restore_sigterm(previous_term)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _install_sigterm() -> _SignalHandler:
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Terminated()

    return signal.signal(signal.SIGTERM, on_term)


def _restore_sigterm(previous: _SignalHandler) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        try:
            signal.signal(signal.SIGTERM, previous)
        except (ValueError, TypeError):
            pass


class JsonReport:
    """--json's promise: exactly one JSON object on stdout, whether the tool succeeds or fails.

    ``progress`` returns the bytes moved so far (acknowledged by the receiver for a sender,
    arrived for a receiver), reported with a failure.
    """

    def __init__(self, prog: str, enabled: bool, progress: Callable[[], int]) -> None:
        self.prog = prog
        self.enabled = enabled
        self.progress = progress
        self.emitted = False

    def emit(self, obj: dict[str, Any]) -> None:
        if self.enabled and not self.emitted:
            self.emitted = True
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    def failure(self, code: int, message: str) -> None:
        if not self.emitted:
            self.emit({"tool": self.prog, "error": message, "exit_code": int(code), "bytes": self.progress()})


def run_main(prog: str, run: Callable[[], int], report: JsonReport | None = None) -> int:
    """Top level of both tools: map every failure to a message and an exit code (and, with
    --json, to the one JSON object on stdout)."""
    try:
        code = int(run())
        if code != ExitCode.OK and report is not None:
            report.failure(code, f"exit code {code}")
        return code
    except BrokenPipeError:  # our stdout went away (e.g. piped into head): nothing left to say
        return int(ExitCode.FAILURE)
    except CliError as exc:
        code, message = int(exc.code), exc.message
        print(f"{prog}: {message}", file=sys.stderr, flush=True)
    except Interrupted as exc:
        code = int(exc.code)
        message = "interrupted" if code == ExitCode.INTERRUPTED else "terminated"
    except (KeyboardInterrupt, _Terminated) as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        message = "interrupted" if interrupted else "terminated"
        code = int(ExitCode.INTERRUPTED if interrupted else ExitCode.TERMINATED)
        print(f"{prog}: {message}", file=sys.stderr, flush=True)
    except Exception as exc:  # a bug: say so plainly, show the trace only when asked
        code, message = int(ExitCode.FAILURE), f"internal error: {type(exc).__name__}: {exc}"
        print(f"{prog}: {message}", file=sys.stderr)
        if os.environ.get("UDT_CLI_DEBUG"):
            traceback.print_exc()
        else:
            print(f"{prog}: set UDT_CLI_DEBUG=1 to see the traceback", file=sys.stderr)
    if report is not None:
        try:
            report.failure(code, message)
        except BrokenPipeError:
            pass
    return code


def emit_result(result: dict[str, Any], human: str, report: JsonReport) -> None:
    """With --json: the one JSON object on stdout (human line on stderr); else the line."""
    if report.enabled:
        print(human, file=sys.stderr, flush=True)
        report.emit(result)
    else:
        print(human, flush=True)
