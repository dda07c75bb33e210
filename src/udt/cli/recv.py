"""``udt-recv``: receive files (or ``--mem`` data) from ``udt-send`` over UDT, many senders at once.

One thread waits on the listener and every connection that has not started sending (one
``udt.epoll``): an idle connection costs no thread.  A connection whose first bytes arrive gets a
thread for its transfer (blocking receives at full speed).  A file is written under a temporary
name in the output directory, each block hashed (in a second thread) as it is written, and
renamed to its real name only when its sha256 matches the sender's; a sender that dies mid-file
costs that file only (the temporary file is removed and the failure reported) and the server
keeps serving.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import udt
from udt.cli import _wire as wire
from udt.cli._common import (
    EXIT_CODES_HELP,
    UNITS_HELP,
    Cancel,
    CliError,
    ExitCode,
    Interrupted,
    JsonReport,
    abort_socket,
    add_transport_arguments,
    argtype,
    file_error,
    format_address,
    format_bytes,
    mbit_per_s,
    negotiated_mss,
    network_error,
    new_socket,
    parse_count,
    parse_host_port,
    parse_port,
    parse_seconds,
    perf_summary,
    recv_exact,
    resolve,
    run_main,
    supervise,
)
from udt.cli._hashing import BlockHasher
from udt.cli._passphrase import RefusalLog, add_passphrase_argument, read_passphrase
from udt.cli._pattern import CHUNK as PATTERN_CHUNK
from udt.cli._pattern import Pattern, first_difference, same_bytes, stream_digest
from udt.cli._progress import Meter, ProgressBar
from udt.errors import ErrorCode, FileTransferError, error_from_code
from udt.units import parse_rate_bytes_per_s

PROG = "udt-recv"
ACCEPT_POLL = 0.5  # seconds; how often the dispatcher looks at the cancel flag

DESCRIPTION = """\
Receive files from udt-send over UDT (a reliable, congestion-controlled transport over UDP).

  udt-recv --port P --output DIR    serve senders; write their files into DIR
  udt-recv --port P --mem           serve memory-mode senders (udt-send --mem), keep nothing

Serves many senders at once.  Every file arrives under a temporary name (.udt-partial-*) and is
renamed to its own name only after its sha256 matches the sender's; a file that fails (sender
died, mismatch) is deleted and reported, and the server goes on.  File names from the network
are checked: one path component, nothing outside DIR.  An existing file of the same name is
replaced.  A server with --output also serves memory-mode senders.

Output: one line per transfer (on stdout).  With --json, stdout carries exactly one JSON object
at exit: with --once or --rendezvous the transfer itself (bytes, seconds, mbit_per_s, sha256,
retransmitted, lost, mss, rtt_ms, peer, mode, status, exit_code, files, and "error" when it
failed), otherwise, printed when the server is stopped, {"sessions": [one object per
transfer], "bytes", "seconds" (from the first transfer's start to the last one's end),
"mbit_per_s", "retransmitted", "lost" (sums), "failed", "sha256": null}.  A failure before
that prints one {"error", "exit_code", "bytes"} object ("bytes": what really arrived).
"sha256" means the same as in udt-send --help."""


@dataclass
class Settings:
    output: str | None
    json: bool
    bar: ProgressBar
    cancel: Cancel
    mss: int | None
    idle_timeout: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    span: tuple[float, float] | None = None  # monotonic first start, last end of all transfers


class SessionFailed(Exception):
    """A transfer ended badly; ``code`` is the exit code it would give with --once."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EXIT_CODES_HELP + "\n\n" + UNITS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port",
        type=argtype(parse_port),
        default=9000,
        help="UDP port to listen on (default 9000; 0 picks a free one, printed on stderr)",
    )
    parser.add_argument(
        "--bind", metavar="ADDR", default="0.0.0.0", help="local address to listen on (default 0.0.0.0; :: for IPv6)"
    )
    parser.add_argument("--output", "-o", metavar="DIR", help="directory the received files go to")
    parser.add_argument(
        "--mem", action="store_true", help="memory mode only: consume data from udt-send --mem, write nothing"
    )
    parser.add_argument("--once", action="store_true", help="exit after one transfer, with its exit code")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the results on stdout at exit")
    add_transport_arguments(parser)
    add_passphrase_argument(parser)
    parser.add_argument(
        "--max-bw",
        type=argtype(parse_rate_bytes_per_s, "rate"),
        metavar="RATE",
        help="cap this side's sending rate (it only sends verdicts), e.g. 80Mbps or 10MB/s",
    )
    parser.add_argument(
        "--rendezvous",
        type=argtype(parse_host_port, "address"),
        metavar="HOST:PORT",
        help="rendezvous with udt-send --rendezvous at HOST:PORT instead of "
        "listening (one transfer, from --bind/--port)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=argtype(parse_seconds, "seconds"),
        default=120.0,
        metavar="SECONDS",
        help="drop a sender that sends no record for this long (default 120; "
        "inside a file, dead senders are caught by UDT's own timeout)",
    )
    parser.add_argument(
        "--backlog", type=argtype(parse_count, "count"), default=64, help="pending connections (default 64)"
    )
    parser.add_argument(
        "--timeout",
        type=argtype(parse_seconds, "seconds"),
        default=30.0,
        metavar="SECONDS",
        help="rendezvous set-up timeout (default 30)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``udt-recv``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mem and args.output:
        parser.error("--mem keeps nothing: do not give --output with it")
    if not args.mem and not args.output:
        parser.error("give --output DIR (where files go) or --mem")
    if args.bind.startswith("[") and args.bind.endswith("]"):
        args.bind = args.bind[1:-1]
    bar = ProgressBar()
    report = JsonReport(PROG, args.json, bar.moved)
    return run_main(PROG, lambda: _run(args, bar, report), report)


def _run(args: argparse.Namespace, bar: ProgressBar, report: JsonReport) -> int:
    if args.output:
        _prepare_output(args.output)
    settings = Settings(
        output=args.output,
        json=args.json,
        bar=bar,
        cancel=Cancel(),
        mss=args.mss,
        idle_timeout=args.idle_timeout,
    )
    single = args.once or args.rendezvous is not None
    family, local = resolve(args.bind, args.port, passive=True)

    def job() -> dict[str, Any] | None:
        if args.rendezvous is not None:
            return _rendezvous(settings, family, local, args)
        return _serve(settings, family, local, args)

    try:
        outcome = supervise(PROG, job, settings.cancel, settings.bar.draw)
    except Interrupted:
        settings.bar.clear()
        if not single:
            _emit_summary(settings, report)
        raise
    finally:
        settings.bar.clear()
    if single:
        assert outcome is not None
        report.emit(outcome)
        return int(outcome["exit_code"])
    return ExitCode.OK


def _emit_summary(settings: Settings, report: JsonReport) -> None:
    with settings.lock:
        sessions = list(settings.sessions)
    nbytes = sum(s["bytes"] for s in sessions)
    # wall time from the first transfer's start to the last one's end (they may overlap)
    seconds = settings.span[1] - settings.span[0] if settings.span else 0.0
    summary = {
        "tool": PROG,
        "sessions": sessions,
        "bytes": nbytes,
        "seconds": round(seconds, 6),
        "mbit_per_s": round(mbit_per_s(nbytes, seconds), 3),
        "sha256": None,
        "retransmitted": sum(s.get("retransmitted") or 0 for s in sessions),
        "lost": sum(s.get("lost") or 0 for s in sessions),
        "failed": sum(1 for s in sessions if s.get("status") != "ok"),
    }
    report.emit(summary)


def _prepare_output(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise file_error(exc, path, "create") from None
    if not os.path.isdir(path):
        raise CliError(ExitCode.FILE_ERROR, f"--output {path} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise CliError(ExitCode.FILE_ERROR, f"cannot write into {path}: permission denied")


def _serve(settings: Settings, family: int, local: tuple, args: argparse.Namespace) -> dict[str, Any] | None:
    listener = new_socket(family, mss=args.mss, max_bw=args.max_bw, cc=args.cc, passphrase=read_passphrase(args))
    settings.cancel.register(listener)
    workers: list[threading.Thread] = []
    try:
        try:
            listener.bind(local)
            listener.listen(args.backlog)
        except OSError as exc:
            raise CliError(
                ExitCode.BIND_FAILED, f"cannot listen on {format_address(local)}: {exc.strerror or exc}"
            ) from None
        print(f"{PROG}: listening on {format_address(listener.getsockname())}", file=sys.stderr, flush=True)
        refusals = RefusalLog(PROG, listener)
        if args.once:
            listener.settimeout(ACCEPT_POLL)
            while not settings.cancel.is_set():
                refusals.check()
                try:
                    conn, addr = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if settings.cancel.is_set():
                        break
                    raise
                conn.settimeout(None)
                print(f"{PROG}: connection from {format_address(addr)}", file=sys.stderr, flush=True)
                settings.cancel.unregister(listener)
                listener.close()
                return _session(settings, conn, addr)
            return None
        _dispatch(settings, listener, workers, refusals)
        return None
    finally:
        settings.cancel.unregister(listener)
        listener.close()
        for worker in workers:
            worker.join(5.0)


def _dispatch(settings: Settings, listener: udt.socket, workers: list[threading.Thread], refusals: RefusalLog) -> None:
    """Accept and park connections in one udt.epoll; start a transfer thread for each one whose
    first bytes arrived, and drop one idle for longer than --idle-timeout."""
    parked: dict[udt.socket, tuple[tuple[Any, ...], float]] = {}  # conn -> (peer, parked at)
    listener.setblocking(False)
    with udt.epoll() as ep:
        ep.add_usock(listener, udt.UDT_EPOLL_IN)
        try:
            while not settings.cancel.is_set():
                refusals.check()
                try:
                    ready = ep.wait(ACCEPT_POLL)[0]
                except OSError:
                    if settings.cancel.is_set():
                        break
                    raise
                for sock in ready:
                    if sock is listener:
                        _accept_all(settings, listener, ep, parked)
                        continue
                    addr, _ = parked.pop(sock)
                    ep.remove_usock(sock)
                    settings.cancel.unregister(sock)  # the session registers it again
                    worker = threading.Thread(
                        target=_session, args=(settings, sock, addr), name=f"{PROG}-{format_address(addr)}", daemon=True
                    )
                    worker.start()
                    workers.append(worker)
                if settings.idle_timeout is not None:
                    now = time.monotonic()
                    for sock, (addr, since) in list(parked.items()):
                        if now - since >= settings.idle_timeout:
                            del parked[sock]
                            ep.remove_usock(sock)
                            settings.cancel.unregister(sock)
                            _session(settings, sock, addr, idle_expired=True)
                workers[:] = [w for w in workers if w.is_alive()]
        finally:
            for sock in parked:
                settings.cancel.unregister(sock)
                abort_socket(sock)


def _accept_all(
    settings: Settings, listener: udt.socket, ep: udt.epoll, parked: dict[udt.socket, tuple[tuple[Any, ...], float]]
) -> None:
    while True:
        try:
            conn, addr = listener.accept()
        except BlockingIOError:
            return
        except OSError:
            if settings.cancel.is_set():
                return
            raise
        conn.settimeout(None)
        print(f"{PROG}: connection from {format_address(addr)}", file=sys.stderr, flush=True)
        settings.cancel.register(conn)
        ep.add_usock(conn, udt.UDT_EPOLL_IN)
        parked[conn] = (addr, time.monotonic())


def _rendezvous(settings: Settings, family: int, local: tuple, args: argparse.Namespace) -> dict[str, Any]:
    host, port = args.rendezvous
    peer_family, peer_addr = resolve(host, port)
    if peer_family != family:
        raise CliError(ExitCode.USAGE, f"--bind {args.bind} and --rendezvous {host} are different address families")
    sock = new_socket(
        family, mss=args.mss, max_bw=args.max_bw, cc=args.cc, rendezvous=True, passphrase=read_passphrase(args)
    )
    settings.cancel.register(sock)
    try:
        try:
            sock.bind(local)
        except OSError as exc:
            raise CliError(
                ExitCode.BIND_FAILED, f"cannot bind to {format_address(local)}: {exc.strerror or exc}"
            ) from None
        print(
            f"{PROG}: rendezvous from {format_address(sock.getsockname())} with {format_address(peer_addr)}",
            file=sys.stderr,
            flush=True,
        )
        sock.settimeout(args.timeout)
        try:
            sock.connect(peer_addr)
        except OSError as exc:
            raise network_error(exc, format_address(peer_addr), connecting=True) from None
        sock.settimeout(None)
    except BaseException:
        settings.cancel.unregister(sock)
        sock.close()
        raise
    return _session(settings, sock, peer_addr)


def _session(
    settings: Settings, conn: udt.socket, addr: tuple[Any, ...], *, idle_expired: bool = False
) -> dict[str, Any]:
    """Serve one connection to its end; never raises (failures become a reported result).
    idle_expired: it sent nothing for --idle-timeout while parked; report that and close."""
    peer = format_address(addr)
    settings.cancel.register(conn)
    state = _SessionState(peer=peer)
    try:
        try:
            if idle_expired:
                raise TimeoutError
            conn.settimeout(settings.idle_timeout)
            _serve_session(settings, conn, state)
            code, error = ExitCode.OK, None
        except SessionFailed as exc:
            code, error = exc.code, exc.message
        except TimeoutError:
            code = ExitCode.TIMEOUT
            error = f"{peer} sent nothing for {settings.idle_timeout:g} s; connection dropped"
        except OSError as exc:
            if settings.cancel.is_set():
                code, error = ExitCode.INTERRUPTED, "interrupted"
            else:
                failure = network_error(exc, peer, connecting=False)
                code, error = failure.code, failure.message
        except EOFError:
            code, error = ExitCode.PEER_LOST, f"{peer} closed the connection mid-transfer"
        except wire.ProtocolError as exc:
            code, error = ExitCode.PROTOCOL_ERROR, f"{peer}: {exc}"
            _try_reply(conn, wire.ReplyStatus.PROTOCOL_ERROR)
        except Exception as exc:  # a bug must not take the server down
            code, error = ExitCode.FAILURE, f"internal error serving {peer}: {type(exc).__name__}: {exc}"
        perf = perf_summary(conn, sender=False)
        mss = negotiated_mss(conn, settings.mss)
    finally:
        settings.cancel.unregister(conn)
        try:
            conn.close()
        except OSError:
            pass  # the outcome is decided: a sender gone before it acknowledged our reply changes nothing
        if state.meter is not None:
            settings.bar.remove(state.meter)
    result = state.result(code, error, perf, mss)
    end = state.ended or time.monotonic()
    with settings.lock:
        settings.sessions.append(result)
        first, last = settings.span or (state.started, end)
        settings.span = (min(first, state.started), max(last, end))
    _report(settings, result, state)
    return result


@dataclass
class _SessionState:
    peer: str
    mode: str = "unknown"
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    nbytes: int = 0
    digest: bytes | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    current: str | None = None
    current_size: int = 0
    current_done: int = 0
    meter: Meter | None = None

    def result(self, code: ExitCode, error: str | None, perf: dict[str, Any], mss: int | None) -> dict[str, Any]:
        seconds = (self.ended or time.monotonic()) - self.started
        out = {
            "tool": PROG,
            "mode": self.mode,
            "peer": self.peer,
            "status": "ok" if code == ExitCode.OK else "failed",
            "bytes": self.nbytes,
            "seconds": round(seconds, 6),
            "mbit_per_s": round(mbit_per_s(self.nbytes, seconds), 3),
            "sha256": self.digest.hex() if self.digest is not None else None,
            **perf,
            "mss": mss,
            "exit_code": int(code),
        }
        if self.mode == "files":
            out["files"] = self.files
        if error is not None:
            out["error"] = error
        return out


def _report(settings: Settings, result: dict[str, Any], state: _SessionState) -> None:
    settings.bar.clear()
    if result["status"] == "ok":
        if result["mode"] == "files":
            count = len(result["files"])
            what = f"{count} file{'s' if count != 1 else ''}, {format_bytes(result['bytes'])}"
            names = ", ".join(f["name"] for f in result["files"][:5]) + (", …" if count > 5 else "")
            what += f" ({names})" if names else ""
        else:
            what = f"{format_bytes(result['bytes'])} of generated data"
        seconds = result["seconds"]
        line = (
            f"{PROG}: received {what} from {result['peer']} in {seconds:.2f} s: "
            f"{result['mbit_per_s']:.1f} Mbit/s ({result['bytes'] / seconds / 1e6 if seconds else 0:.1f} MB/s), "
            f"{_count(result.get('retransmitted'))} retransmitted, {_count(result.get('lost'))} lost; "
            f"{'sha256 verified' if result['mode'] == 'files' else 'verified'}"
        )
        print(line, file=sys.stderr if settings.json else sys.stdout, flush=True)
        return
    detail = result.get("error") or "failed"
    if state.current is not None:
        detail += (
            f" (in {state.current}: {format_bytes(state.current_done)} of "
            f"{format_bytes(state.current_size)}; partial file discarded)"
        )
    print(f"{PROG}: transfer from {result['peer']} failed: {detail}", file=sys.stderr, flush=True)


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _try_reply(conn: udt.socket, status: wire.ReplyStatus, nbytes: int = 0, digest: bytes = wire.ZERO_DIGEST) -> None:
    try:
        conn.sendall(wire.pack_reply(status, nbytes, digest))
    except OSError:
        pass


def _serve_session(settings: Settings, conn: udt.socket, state: _SessionState) -> None:
    kind = wire.unpack_session_header(recv_exact(conn, wire.SESSION_HEADER.size))
    state.started = time.monotonic()
    if kind == wire.SessionKind.FILES:
        state.mode = "files"
        if settings.output is None:
            _try_reply(conn, wire.ReplyStatus.KIND_REFUSED)
            raise SessionFailed(ExitCode.PROTOCOL_ERROR, f"{state.peer} sent files but this is a --mem receiver")
        _receive_files(settings, conn, state)
    elif kind == wire.SessionKind.PATTERN:
        state.mode = "memory"
        _receive_pattern(settings, conn, state)
    else:
        state.mode = "memory"
        _receive_memory(settings, conn, state)


def _fill(conn: udt.socket, view: memoryview, state: _SessionState) -> None:
    """Fill *view*, counting every byte as it arrives (a chunk cut short still counts)."""
    while view:
        n = conn.recv_into(view)
        if not n:
            raise EOFError("peer closed the connection")
        view = view[n:]
        state.nbytes += n
        if state.meter is not None:
            state.meter.done = state.meter.moved = state.nbytes


def _receive_files(settings: Settings, conn: udt.socket, state: _SessionState) -> None:
    assert settings.output is not None
    digests: list[bytes] = []
    state.meter = settings.bar.add(Meter(state.peer))
    mismatches: list[str] = []
    while True:
        tag = recv_exact(conn, 1)
        if tag == wire.Tag.END:
            count, digest = wire.END_BODY.unpack(recv_exact(conn, wire.END_BODY.size))
            state.ended = time.monotonic()
            state.digest = wire.session_digest(digests) if digests else hashlib.sha256(b"").digest()
            ok = count == len(digests) and digest == state.digest
            _try_reply(
                conn, wire.ReplyStatus.OK if ok else wire.ReplyStatus.DIGEST_MISMATCH, state.nbytes, state.digest
            )
            if mismatches:
                raise SessionFailed(ExitCode.VERIFY_FAILED, f"sha256 mismatch for {', '.join(mismatches)}; discarded")
            if not ok:
                raise SessionFailed(
                    ExitCode.VERIFY_FAILED, f"{state.peer} announced {count} files, received {len(digests)}"
                )
            return
        if tag != wire.Tag.FILE:
            raise wire.ProtocolError(f"unexpected record tag {tag!r}")
        size, name_length = wire.FILE_HEADER.unpack(recv_exact(conn, wire.FILE_HEADER.size))
        if name_length > 4 * wire.MAX_NAME_BYTES:
            raise wire.ProtocolError(f"file name length {name_length} is absurd")
        raw_name = recv_exact(conn, name_length)
        try:
            name = wire.check_file_name(raw_name)
        except ValueError as exc:
            _try_reply(conn, wire.ReplyStatus.NAME_REFUSED)
            raise SessionFailed(ExitCode.VERIFY_FAILED, f"refused file name {raw_name!r}: {exc}") from None
        digest, ok = _receive_one(settings, conn, state, name, size)
        digests.append(digest)
        state.files.append(
            {
                "name": name,
                "bytes": size,
                "sha256": digest.hex(),
                "status": "verified" if ok else "sha256 mismatch",
                "path": os.path.join(settings.output, name) if ok else None,
            }
        )
        if not ok:
            mismatches.append(name)
        _try_reply(conn, wire.ReplyStatus.OK if ok else wire.ReplyStatus.DIGEST_MISMATCH, size, digest)


def _receive_one(
    settings: Settings, conn: udt.socket, state: _SessionState, name: str, size: int
) -> tuple[bytes, bool]:
    """Receive one file into a temporary name; rename it only if the sha256 matches.

    Each step is written by ``_recvfile_lend`` straight from the receive ring's slots
    (``pwritev``, GIL released) and lent to the BlockHasher's thread, which hashes it from the
    same slots and then gives them back to the ring: the digest covers exactly the bytes
    written, with no copy of ours, no reading back, and the hash beside the receive.
    """
    assert settings.output is not None and state.meter is not None
    final = os.path.join(settings.output, name)
    state.current, state.current_size, state.current_done = name, size, 0
    state.meter.label, state.meter.total, state.meter.done = name, size, 0
    temp: str | None  # None once the file is in place
    try:
        fd, temp = tempfile.mkstemp(prefix=wire.PARTIAL_PREFIX, dir=settings.output)
    except OSError as exc:
        _try_reply(conn, wire.ReplyStatus.WRITE_FAILED)
        failure = file_error(exc, settings.output, "write into")
        raise SessionFailed(failure.code, failure.message) from None
    hasher = BlockHasher(name=f"{PROG}-hash", buffers=_LEASES)
    hasher.start()
    try:
        # a receive timeout inside a file would only add a way to fail: a dead sender is left
        # to UDT's broken-connection detection.
        conn.settimeout(None)
        try:
            with open(fd, "r+b", buffering=0):  # closes fd
                while state.current_done < size:
                    try:
                        lease = conn._recvfile_lend(fd, state.current_done, min(_LEASE, size - state.current_done))
                    except FileTransferError as exc:
                        if exc.udt_code != ErrorCode.FILE_WRITE:
                            raise
                        _try_reply(conn, wire.ReplyStatus.WRITE_FAILED)
                        failure = file_error(exc, final, "write")
                        raise SessionFailed(failure.code, failure.message) from None
                    if lease is None:
                        raise error_from_code(
                            ErrorCode.CONNECTION_BROKEN, f"stream ended after {state.current_done} of {size} bytes"
                        )
                    hasher.lend_lease(lease)
                    state.current_done += lease.nbytes
                    state.nbytes += lease.nbytes
                    state.meter.done = state.current_done
                    state.meter.moved = state.nbytes
            ours = hasher.result()  # every lease released: the socket reads normally again
        except BaseException:
            hasher.abandon()
            raise
        conn.settimeout(settings.idle_timeout)
        tag, theirs = recv_exact(conn, 1), recv_exact(conn, wire.DIGEST_BODY.size)
        if tag != wire.Tag.DIGEST:
            raise wire.ProtocolError(f"expected the sha256 record after {name}, got tag {tag!r}")
        if ours != theirs:
            return ours, False
        os.chmod(temp, 0o666 & ~_UMASK)
        os.replace(temp, final)
        temp = None
        state.current = None
        return ours, True
    finally:
        hasher.abandon()
        hasher.join()
        if temp is not None:
            try:
                os.unlink(temp)
            except OSError:
                pass


_LEASE = 1 << 20  # bytes per lease: the most _recvfile_lend writes and lends at once
_LEASES = 4  # leases in flight to the hashing thread (their slots are held in the ring meanwhile)


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide, not thread-safe to probe


def _receive_memory(settings: Settings, conn: udt.socket, state: _SessionState) -> None:
    """A memory session of arbitrary data (udt-send before pattern sessions, other tools):
    sha256 of every byte, compared with the sender's."""
    hasher = hashlib.sha256()
    buf = bytearray(0)  # grows to the largest chunk this sender uses (1 MiB for udt-send)
    state.meter = settings.bar.add(Meter(f"memory from {state.peer}"))
    while True:
        tag = recv_exact(conn, 1)
        if tag == wire.Tag.CHUNK:
            (length,) = wire.CHUNK_BODY.unpack(recv_exact(conn, wire.CHUNK_BODY.size))
            if not 0 < length <= wire.MAX_CHUNK:
                raise wire.ProtocolError(f"chunk length {length} out of range")
            if length > len(buf):
                buf = bytearray(length)
            block = memoryview(buf)[:length]
            _fill(conn, block, state)
            hasher.update(block)
        elif tag == wire.Tag.END:
            count, digest = wire.END_BODY.unpack(recv_exact(conn, wire.END_BODY.size))
            state.ended = time.monotonic()
            state.digest = hasher.digest()
            ok = count == state.nbytes and digest == state.digest
            _try_reply(
                conn, wire.ReplyStatus.OK if ok else wire.ReplyStatus.DIGEST_MISMATCH, state.nbytes, state.digest
            )
            if not ok:
                raise SessionFailed(
                    ExitCode.VERIFY_FAILED,
                    f"memory transfer from {state.peer}: sender sent {count} bytes, "
                    f"received {state.nbytes}, sha256 {'matches' if digest == state.digest else 'differs'}",
                )
            return
        else:
            raise wire.ProtocolError(f"unexpected record tag {tag!r}")


def _receive_pattern(settings: Settings, conn: udt.socket, state: _SessionState) -> None:
    """A pattern session (``udt-send --mem``): compare every chunk with the seed's pattern.

    A mismatch does not end the session at once: the rest is read (and still compared, so the
    count stays honest) and the end record answered with DIGEST_MISMATCH, as a memory session
    whose sha256 differs is."""
    tag = recv_exact(conn, 1)
    if tag != wire.Tag.SEED:
        raise wire.ProtocolError(f"expected the pattern seed, got tag {tag!r}")
    (seed,) = wire.SEED_BODY.unpack(recv_exact(conn, wire.SEED_BODY.size))
    pattern = Pattern(seed)
    buf = bytearray(PATTERN_CHUNK)
    state.meter = settings.bar.add(Meter(f"memory from {state.peer}"))
    first_bad: int | None = None  # stream offset of the first byte that differed
    while True:
        tag = recv_exact(conn, 1)
        if tag == wire.Tag.CHUNK:
            (length,) = wire.CHUNK_BODY.unpack(recv_exact(conn, wire.CHUNK_BODY.size))
            if not 0 < length <= PATTERN_CHUNK:
                raise wire.ProtocolError(f"pattern chunk length {length} out of range")
            start = pattern.position
            expected = pattern.next_chunk(length)
            block = memoryview(buf)[:length]
            _fill(conn, block, state)
            if first_bad is None and not same_bytes(block, expected):
                first_bad = start + first_difference(block, expected)
        elif tag == wire.Tag.END:
            count, digest = wire.END_BODY.unpack(recv_exact(conn, wire.END_BODY.size))
            state.ended = time.monotonic()
            state.digest = stream_digest(seed, state.nbytes)
            ok = first_bad is None and count == state.nbytes and digest == state.digest
            _try_reply(
                conn, wire.ReplyStatus.OK if ok else wire.ReplyStatus.DIGEST_MISMATCH, state.nbytes, state.digest
            )
            if not ok:
                what = (
                    f"byte {first_bad} differs from the pattern" if first_bad is not None else "stream digest differs"
                )
                raise SessionFailed(
                    ExitCode.VERIFY_FAILED,
                    f"memory transfer from {state.peer}: sender sent {count} bytes, received {state.nbytes}, {what}",
                )
            return
        else:
            raise wire.ProtocolError(f"unexpected record tag {tag!r}")


if __name__ == "__main__":
    sys.exit(main())
