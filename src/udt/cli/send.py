"""``udt-send``: send files (or generated data, ``--mem``) to a ``udt-recv`` over one UDT connection.

All files travel over one connection, one after another, each followed by its sha256; the
receiver checks every file and answers per file, and ``udt-send`` exits 0 only when the receiver
has verified all of them.  Each block of a file is a window of the mapped file (``_mapped``),
queued on the socket straight from the page cache, then hashed in a second thread
(``_hashing.BlockHasher``), so hashing overlaps sending.
"""

from __future__ import annotations

import argparse
import os
import socket
import stat
import sys
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
    JsonReport,
    add_transport_arguments,
    argtype,
    emit_result,
    file_error,
    format_address,
    format_bytes,
    mbit_per_s,
    negotiated_mss,
    network_error,
    new_socket,
    parse_host_port,
    parse_seconds,
    perf_summary,
    recv_exact,
    resolve,
    run_main,
    supervise,
)
from udt.cli._hashing import BLOCK, BlockHasher
from udt.cli._mapped import MappedFile, open_mapped
from udt.cli._passphrase import add_passphrase_argument, read_passphrase
from udt.cli._pattern import CHUNK as PATTERN_CHUNK
from udt.cli._pattern import Pattern, new_seed, stream_digest
from udt.cli._progress import Meter, ProgressBar
from udt.errors import ErrorCode
from udt.options import SocketOption
from udt.units import parse_rate_bytes_per_s

PROG = "udt-send"
MEM_CHUNK = PATTERN_CHUNK  # bytes per memory-mode chunk record
REPLY_TIMEOUT = 120.0  # seconds to wait for the receiver's verdict after the last byte

DESCRIPTION = """\
Send files to udt-recv over UDT (a reliable, congestion-controlled transport over UDP).

  udt-send FILE... HOST:PORT        send files; the receiver verifies each one by sha256
  udt-send --mem SECONDS HOST:PORT  stream generated data for SECONDS (memory to memory)

All files go over one connection, one after another, under their base names.  A progress bar
with rate and ETA (of the bytes the receiver acknowledged) appears when stderr is a terminal.
The final line gives the throughput; with --json, stdout carries exactly one JSON object
instead: bytes, seconds, mbit_per_s, sha256, retransmitted, lost, mss, rtt_ms, peer, mode,
exit_code, and for files a "files" list (name, path, bytes, sha256, status).  A failure still
prints one object: "error", "exit_code" and "bytes" (acknowledged by the receiver so far).
"sha256" is the file's sha256 for one file; for several files it is the sha256 of their raw
32-byte digests concatenated in order.  In --mem mode the data is a pattern generated from a
random seed, which the receiver checks byte for byte (cheaper than hashing, so the run measures
the transport); "sha256" is then the sha256 naming that stream (seed and byte count), and
udt-recv --mem prints the same value when every byte it received matched."""


@dataclass
class SourceFile:
    path: str
    name: str
    size: int
    digest: bytes = b""
    status: str = "pending"


@dataclass
class Replies:
    """Verdicts from the receiver, collected by a reader thread while we keep sending."""

    expected: int
    items: list[tuple[wire.ReplyStatus, int, bytes]] = field(default_factory=list)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def fatal(self) -> tuple[wire.ReplyStatus, int, bytes] | None:
        for item in self.items:
            if item[0] not in (wire.ReplyStatus.OK, wire.ReplyStatus.DIGEST_MISMATCH):
                return item
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EXIT_CODES_HELP + "\n\n" + UNITS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="files to send (not with --mem)")
    parser.add_argument(
        "destination",
        metavar="HOST:PORT",
        type=argtype(parse_host_port, "address"),
        help="the receiver; IPv6 as [ADDR]:PORT",
    )
    parser.add_argument(
        "--mem",
        type=argtype(parse_seconds, "seconds"),
        metavar="SECONDS",
        help="memory mode: send generated data for SECONDS instead of files",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object with the results on stdout")
    add_transport_arguments(parser)
    add_passphrase_argument(parser)
    parser.add_argument(
        "--max-bw",
        type=argtype(parse_rate_bytes_per_s, "rate"),
        metavar="RATE",
        help="cap the sending rate, e.g. 800Mbps (bits/s) or 100MB/s (bytes/s)",
    )
    parser.add_argument(
        "--rendezvous",
        action="store_true",
        help="rendezvous connection (both sides connect; the peer runs "
        "udt-recv --rendezvous); the local port is --bind's or HOST:PORT's",
    )
    parser.add_argument("--bind", metavar="[ADDR:]PORT", help="local address and/or port to send from")
    parser.add_argument(
        "--timeout",
        type=argtype(parse_seconds, "seconds"),
        default=10.0,
        metavar="SECONDS",
        help="connection set-up timeout (default 10)",
    )
    return parser


def _parse_bind(text: str | None) -> tuple[str, int | None]:
    """``--bind``: ``PORT``, ``ADDR:PORT`` or ``[ADDR6]:PORT``."""
    if text is None:
        return "", None
    if text.isdigit():
        return "", int(text)
    host, port = parse_host_port(text, allow_zero=True)
    return host, port


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``udt-send``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mem is not None and args.files:
        parser.error("--mem sends generated data: give no FILE with it")
    if args.mem is None and not args.files:
        parser.error("nothing to send: give FILE arguments or --mem SECONDS")
    try:
        bind = _parse_bind(args.bind)
    except ValueError as exc:
        parser.error(f"argument --bind: {exc}")
    bar = ProgressBar()
    report = JsonReport(PROG, args.json, bar.moved)
    return run_main(PROG, lambda: _run(args, bind, bar, report), report)


def _run(args: argparse.Namespace, bind: tuple[str, int | None], bar: ProgressBar, report: JsonReport) -> int:
    sources = [] if args.mem is not None else _check_sources(args.files)
    host, port = args.destination
    family, sockaddr = resolve(host, port)
    cancel = Cancel()
    peer = format_address(sockaddr)

    def job() -> dict[str, Any]:
        sock = _connect(family, sockaddr, peer, args, bind, cancel)
        moot = True  # the verdict is the receiver's replies: data still queued when we fail, or
        try:  # when it refused a file, is moot and close() must not turn it into an error
            if args.mem is not None:
                result = _send_memory(sock, peer, args.mem, bar, cancel)
            else:
                result = _send_files(sock, peer, sources, bar, cancel)
            result["mss"] = negotiated_mss(sock, args.mss)
            moot = any(f["status"] != "verified" for f in result.get("files", []))
            return result
        finally:
            bar.moved()  # the last acknowledged count, while the socket can still tell it
            cancel.unregister(sock)
            if moot:
                sock.setsockopt(udt.SocketOption.UDT_LINGER, 0)
            sock.close()

    try:
        result = supervise(PROG, job, cancel, bar.draw)
    finally:
        bar.clear()
    failed = [f for f in result.get("files", []) if f["status"] != "verified"]
    error = f"verification failed for {', '.join(f['name'] for f in failed)}" if failed else None
    result["exit_code"] = int(ExitCode.VERIFY_FAILED if failed else ExitCode.OK)
    if error is not None:
        result["error"] = error
    emit_result(result, _human_line(result), report)
    if error is not None:
        raise CliError(ExitCode.VERIFY_FAILED, error)
    return ExitCode.OK


def _check_sources(paths: list[str]) -> list[SourceFile]:
    """Every file must be a readable regular file before we connect; names must be sendable."""
    sources: list[SourceFile] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise file_error(exc, path, "read") from None
        if not stat.S_ISREG(st.st_mode):
            raise CliError(ExitCode.FILE_ERROR, f"cannot send {path}: not a regular file")
        if not os.access(path, os.R_OK):
            raise CliError(ExitCode.FILE_ERROR, f"cannot read {path}: permission denied")
        name = os.path.basename(os.path.normpath(path))
        try:
            wire.check_file_name(name.encode("utf-8", "surrogateescape"))
        except ValueError as exc:
            raise CliError(ExitCode.USAGE, f"cannot send {path}: {exc}") from None
        if any(s.name == name for s in sources):
            raise CliError(ExitCode.USAGE, f"two files named {name!r}: the receiver would keep only one")
        sources.append(SourceFile(path=path, name=name, size=st.st_size))
    return sources


def _connect(
    family: int, sockaddr: tuple, peer: str, args: argparse.Namespace, bind: tuple[str, int | None], cancel: Cancel
) -> udt.socket:
    sock = new_socket(
        family,
        mss=args.mss,
        max_bw=args.max_bw,
        cc=args.cc,
        rendezvous=args.rendezvous,
        passphrase=read_passphrase(args),
    )
    cancel.register(sock)
    try:
        local_host, local_port = bind
        if args.rendezvous and local_port is None:
            local_port = sockaddr[1]  # UDT4's convention: both peers use the same port
        if local_host or local_port is not None:
            wildcard = "0.0.0.0" if family == socket.AF_INET else "::"
            _family, laddr = resolve(local_host or wildcard, local_port or 0, passive=True)
            try:
                sock.bind(laddr)
            except OSError as exc:
                raise CliError(
                    ExitCode.BIND_FAILED, f"cannot bind to {format_address(laddr)}: {exc.strerror or exc}"
                ) from None
        sock.settimeout(args.timeout)
        try:
            sock.connect(sockaddr)
        except TimeoutError as exc:
            if cancel.is_set():
                raise
            if args.rendezvous:  # the socket says what it tried and why a NAT may be the cause
                detail = exc.strerror or str(exc)
                raise CliError(ExitCode.TIMEOUT, f"{detail} (is udt-recv --rendezvous running there?)") from None
            raise CliError(
                ExitCode.TIMEOUT, f"no answer from {peer} within {args.timeout:g} s (is udt-recv running there?)"
            ) from None
        except OSError as exc:
            if cancel.is_set():
                raise
            raise network_error(exc, peer, connecting=True) from None
        sock.settimeout(None)
    except BaseException:
        cancel.unregister(sock)
        sock.close()
        raise
    return sock


def _start_reply_reader(sock: udt.socket, replies: Replies, peer: str) -> threading.Thread:
    def read() -> None:
        try:
            while len(replies.items) < replies.expected:
                item = wire.unpack_reply(recv_exact(sock, wire.REPLY.size))
                replies.items.append(item)
                if replies.fatal() is not None:
                    break
        except BaseException as exc:  # kept for the sending thread to interpret
            replies.error = exc
        finally:
            replies.done.set()

    reader = threading.Thread(target=read, name=f"{PROG}-replies", daemon=True)
    reader.start()
    return reader


def _fatal_reply_error(item: tuple[wire.ReplyStatus, int, bytes], what: str) -> CliError:
    status = item[0]
    code = ExitCode.PROTOCOL_ERROR if status == wire.ReplyStatus.PROTOCOL_ERROR else ExitCode.VERIFY_FAILED
    return CliError(code, f"{what}: {wire.STATUS_TEXT[status]}")


def _send_files(
    sock: udt.socket, peer: str, sources: list[SourceFile], bar: ProgressBar, cancel: Cancel
) -> dict[str, Any]:
    total = sum(s.size for s in sources)
    label = sources[0].name if len(sources) == 1 else f"{len(sources)} files"
    meter = bar.add(Meter(label, total, unacked=lambda: sock.getsockopt(SocketOption.UDT_SNDDATA)))
    replies = Replies(expected=len(sources) + 1)
    started = time.monotonic()
    reader = None
    current = sources[0]
    try:
        sock.sendall(wire.pack_session_header(wire.SessionKind.FILES))
        reader = _start_reply_reader(sock, replies, peer)
        sent_before = 0
        for current in sources:
            if replies.fatal() is not None:
                break
            current.digest = _send_one(sock, current, meter, sent_before)
            sent_before += current.size
        else:
            digests = [s.digest for s in sources]
            sock.sendall(wire.pack_end(len(sources), wire.session_digest(digests)))
        if not replies.done.wait(REPLY_TIMEOUT):
            raise CliError(ExitCode.TIMEOUT, f"no verdict from {peer} within {REPLY_TIMEOUT:.0f} s")
    except OSError as exc:
        if cancel.is_set():
            raise
        _raise_with_reply(replies, exc, peer, f"sending {current.name}")
    seconds = time.monotonic() - started
    bar.remove(meter)
    fatal = replies.fatal()
    if fatal is not None:
        index = replies.items.index(fatal)
        name = sources[index].name if index < len(sources) else "the session"
        raise _fatal_reply_error(fatal, name)
    if replies.error is not None or len(replies.items) < replies.expected:
        raise network_error(replies.error or EOFError(), peer, connecting=False)
    for source, (status, nbytes, digest) in zip(sources, replies.items):
        if status == wire.ReplyStatus.OK and (digest != source.digest or nbytes != source.size):
            raise CliError(ExitCode.PROTOCOL_ERROR, f"{peer} confirmed {source.name} with a different sha256")
        source.status = "verified" if status == wire.ReplyStatus.OK else "sha256 mismatch"
    perf = perf_summary(sock, sender=True)
    if reader is not None:
        reader.join(1.0)
    session = wire.session_digest([s.digest for s in sources])
    return {
        "tool": PROG,
        "mode": "files",
        "peer": peer,
        "bytes": total,
        "seconds": round(seconds, 6),
        "mbit_per_s": round(mbit_per_s(total, seconds), 3),
        "sha256": session.hex(),
        **perf,
        "files": [
            {"name": s.name, "path": s.path, "bytes": s.size, "sha256": s.digest.hex(), "status": s.status}
            for s in sources
        ],
    }


def _raise_with_reply(replies: Replies, exc: OSError, peer: str, what: str) -> None:
    """A send failed: if the receiver explained why before closing, report its reason."""
    replies.done.wait(2.0)
    fatal = replies.fatal()
    if fatal is not None:
        raise _fatal_reply_error(fatal, what) from None
    if getattr(exc, "udt_code", 0) in (ErrorCode.FILE_READ_OFFSET, ErrorCode.FILE_READ) or (exc.filename is not None):
        raise file_error(exc, what.removeprefix("sending "), "read") from None
    raise network_error(exc, peer, connecting=False) from None


def _send_one(sock: udt.socket, source: SourceFile, meter: Meter, sent_before: int) -> bytes:
    """Queue each block once and hash it in the BlockHasher thread: the digest covers exactly the
    bytes sent.  The blocks are slices of the mapped file (``_mapped``: no copy before the send
    buffer's), or read with ``preadv`` where mapping is not available."""
    try:
        f = open(source.path, "rb", buffering=0)
    except OSError as exc:
        raise file_error(exc, source.path, "read") from None
    with f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        if size != source.size:
            raise CliError(ExitCode.FILE_ERROR, f"{source.path} changed size while queued")
        try:
            mapped = open_mapped(fd, size, writable=False)
        except OSError as exc:
            raise file_error(exc, source.path, "read") from None
        hasher = BlockHasher(name=f"{PROG}-hash")
        hasher.start()
        try:
            sock.sendall(wire.pack_file_header(source.name, size))
            if mapped is not None:
                _send_mapped(sock, mapped, source, hasher, meter, sent_before)
            else:
                _send_read(sock, fd, source, hasher, meter, sent_before)
            digest = hasher.result()
            if mapped is not None and mapped.shrank():  # the hasher met a vanished page
                raise CliError(ExitCode.FILE_ERROR, f"{source.path} shrank while being sent")
        except BaseException:
            hasher.abandon()
            raise
        finally:
            if mapped is not None:
                hasher.join()  # it gives back every lent window before the mapping goes
                mapped.close()
        sock.sendall(wire.pack_digest(digest))
        return digest


def _send_mapped(
    sock: udt.socket, mapped: MappedFile, source: SourceFile, hasher: BlockHasher, meter: Meter, sent_before: int
) -> None:
    for offset in range(0, mapped.size, BLOCK):
        length = min(BLOCK, mapped.size - offset)
        try:
            block = mapped.window(offset, length)
        except OSError as exc:  # EFAULT: the file shrank under us
            raise CliError(ExitCode.FILE_ERROR, f"{source.path} shrank while being sent ({exc.strerror})") from None
        sock.sendall(block)
        if mapped.shrank():  # what was sent of this window may be zeros: never followed by a digest
            raise CliError(ExitCode.FILE_ERROR, f"{source.path} shrank while being sent")
        hasher.lend(block)  # the hasher releases it: not to be touched after this
        meter.queued = sent_before + offset + length


def _send_read(
    sock: udt.socket, fd: int, source: SourceFile, hasher: BlockHasher, meter: Meter, sent_before: int
) -> None:
    offset, size = 0, source.size
    while offset < size:
        view = hasher.take()
        try:
            got = os.preadv(fd, [view[: min(len(view), size - offset)]], offset)
        except OSError as exc:
            raise file_error(exc, source.path, "read") from None
        if not got:
            raise CliError(ExitCode.FILE_ERROR, f"{source.path} shrank while being sent")
        sock.sendall(view[:got])
        hasher.submit(view[:got])
        offset += got
        meter.queued = sent_before + offset


def _send_memory(sock: udt.socket, peer: str, seconds: float, bar: ProgressBar, cancel: Cancel) -> dict[str, Any]:
    """A pattern session: the chunks are slices of a seeded pool the receiver checks byte for
    byte (``_pattern``), so this thread only queues them: no per-byte work besides the copy."""
    pattern = Pattern(new_seed())
    header = wire.pack_chunk_header(MEM_CHUNK)
    replies = Replies(expected=1)
    started = time.monotonic()
    deadline = started + seconds
    meter = bar.add(Meter("memory", deadline=deadline, unacked=lambda: sock.getsockopt(SocketOption.UDT_SNDDATA)))
    total = 0
    digest = wire.ZERO_DIGEST
    try:
        sock.sendall(wire.pack_session_header(wire.SessionKind.PATTERN) + wire.pack_seed(pattern.seed))
        _start_reply_reader(sock, replies, peer)
        while time.monotonic() < deadline and not replies.done.is_set():
            chunk = pattern.next_chunk(MEM_CHUNK)
            sock.sendall(header)
            sock.sendall(chunk)
            total += MEM_CHUNK
            meter.queued = total
        digest = stream_digest(pattern.seed, total)
        if not replies.done.is_set():
            sock.sendall(wire.pack_end(total, digest))
        if not replies.done.wait(REPLY_TIMEOUT):
            raise CliError(ExitCode.TIMEOUT, f"no verdict from {peer} within {REPLY_TIMEOUT:.0f} s")
    except OSError as exc:
        if cancel.is_set():
            raise
        _raise_with_reply(replies, exc, peer, "memory transfer")
    elapsed = time.monotonic() - started
    bar.remove(meter)
    if replies.error is not None or not replies.items:
        raise network_error(replies.error or EOFError(), peer, connecting=False)
    status, nbytes, their_digest = replies.items[0]
    if status != wire.ReplyStatus.OK:
        raise _fatal_reply_error(replies.items[0], "memory transfer")
    if nbytes != total or their_digest != digest:
        raise CliError(ExitCode.VERIFY_FAILED, f"{peer} received {nbytes} bytes with another stream digest")
    return {
        "tool": PROG,
        "mode": "memory",
        "peer": peer,
        "bytes": total,
        "seconds": round(elapsed, 6),
        "mbit_per_s": round(mbit_per_s(total, elapsed), 3),
        "sha256": digest.hex(),
        **perf_summary(sock, sender=True),
    }


def _human_line(result: dict[str, Any]) -> str:
    nbytes, seconds = result["bytes"], result["seconds"]
    if result["mode"] == "files":
        count = len(result["files"])
        what = f"{count} file{'s' if count != 1 else ''}, {format_bytes(nbytes)}"
        ok = all(f["status"] == "verified" for f in result["files"])
        verdict = "verified by the receiver" if ok else "VERIFICATION FAILED"
    else:
        what = f"{format_bytes(nbytes)} of generated data"
        verdict = "every byte checked by the receiver, stream sha256 " + result["sha256"][:16] + "…"
    return (
        f"{PROG}: sent {what} to {result['peer']} in {seconds:.2f} s: "
        f"{result['mbit_per_s']:.1f} Mbit/s ({nbytes / seconds / 1e6 if seconds else 0:.1f} MB/s), "
        f"{_count(result.get('retransmitted'))} retransmitted, {_count(result.get('lost'))} lost; "
        f"{verdict}"
    )


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


if __name__ == "__main__":
    sys.exit(main())
