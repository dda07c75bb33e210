"""``Transport``: an ``asyncio.Transport`` over a connected, non-blocking udt stream socket."""

from __future__ import annotations

import asyncio
import logging
import socket as _pysocket
from typing import Any

from udt.options import SocketOption

from ._poller import acquire_poller

# One read takes at most this much; reading once per wake-up keeps 1,000 connections fair.
READ_CHUNK = 256 * 1024
HIGH_WATER = 64 * 1024
LOST_WRITE_WARNING = 5  # asyncio's threshold for warning about writes to a lost connection

logger = logging.getLogger("udt.aio")


def close_socket(loop: asyncio.AbstractEventLoop, sock: Any, *, abort: bool = False) -> None:
    """Close *sock* without blocking the loop: udt's close waits (up to the linger time) until
    the send buffer is acknowledged, so a socket with data still queued closes on a worker thread."""
    if abort:
        sock.setsockopt(SocketOption.UDT_LINGER, (False, 0))
    elif sock.getsockopt(SocketOption.UDT_SNDDATA):
        loop.run_in_executor(None, sock.close)
        return
    sock.close()


class Transport(asyncio.Transport):
    """Bytes in and out of one udt connection, driven by the loop's udt poller."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: Any,
        protocol: asyncio.BaseProtocol,
        *,
        server: Any = None,
    ) -> None:
        super().__init__()
        self._info = {"socket": sock, "sockname": sock.getsockname(), "peername": sock.getpeername()}
        self._loop = loop
        self._sock = sock
        self._protocol: Any = protocol
        self._poller = acquire_poller(loop)
        self._buffer = bytearray()
        self._read_buffer = bytearray(READ_CHUNK)
        self._closing = False
        self._closed = False
        self._reading = False
        self._read_eof = False
        self._eof_pending = False  # write_eof() called with bytes still queued
        self._eof_sent = False
        self._protocol_paused = False
        self._lost_writes = 0
        self._high = HIGH_WATER
        self._low = HIGH_WATER // 4
        self._server = server
        if server is not None:
            server._attach()
        loop.call_soon(self._start, protocol)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "closing" if self._closing else "open"
        return f"<udt.aio.Transport {state} peer={self._info['peername']} buffered={len(self._buffer)}>"

    def _start(self, protocol: asyncio.BaseProtocol) -> None:
        protocol.connection_made(self)
        if not self._closing:
            self.resume_reading()

    # ---- information ----------------------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "perfmon":  # a fresh snapshot each time, as the socket method gives
            return default if self._closed else self._sock.perfmon()
        return self._info.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # ---- reading --------------------------------------------------------------------------
    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._poller.set_reader(self._sock, None)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing and not self._read_eof:
            self._reading = True
            self._poller.set_reader(self._sock, self._read_ready)

    def _read_ready(self) -> None:
        try:
            n = self._sock.recv_into(self._read_buffer)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fatal_error(exc)
            return
        if n:
            self._protocol.data_received(bytes(memoryview(self._read_buffer)[:n]))
            return
        self._read_eof = True
        self.pause_reading()
        if not self._protocol.eof_received():
            self.close()

    # ---- writing --------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if self._eof_pending or self._eof_sent:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self._closed:  # as asyncio: writes after the connection is lost are dropped, with a warning
            self._lost_writes += 1
            if self._lost_writes >= LOST_WRITE_WARNING:
                logger.warning("udt.aio: write() on a closed transport (%d times)", self._lost_writes)
            return
        view = memoryview(data).cast("B")
        if not self._buffer:
            try:
                taken = self._sock.send(view)
            except BlockingIOError:
                taken = 0
            except OSError as exc:
                self._fatal_error(exc)
                return
            if taken == len(view):
                return
            view = view[taken:]
            self._poller.set_writer(self._sock, self._write_ready)
        self._buffer += view
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _write_ready(self) -> None:
        if self._buffer:
            try:
                taken = self._sock.send(self._buffer)
            except BlockingIOError:
                return
            except OSError as exc:
                self._fatal_error(exc)
                return
            del self._buffer[:taken]
            self._maybe_resume_protocol()
            if self._buffer:
                return
        self._poller.set_writer(self._sock, None)
        if self._eof_pending:
            self._send_eof()
        if self._closing:
            self._finish(None)

    def can_write_eof(self) -> bool:
        """True when both ends are udt and negotiated the half-close (protocol.md §11): after
        write_eof() the peer reads EOF and can still answer.  A UDT4/SRT peer gets a full close
        from shutdown(SHUT_WR), so its reply could not arrive: False there."""
        try:
            return self._sock._half_close_negotiated()
        except OSError:  # not connected (any more)
            return False

    def write_eof(self) -> None:
        """Send EOF after every byte written before (``shutdown(SHUT_WR)``); see can_write_eof."""
        if self._closing or self._eof_pending or self._eof_sent:
            return
        if self._buffer:
            self._eof_pending = True
        else:
            self._send_eof()

    def _send_eof(self) -> None:
        # shutdown(SHUT_WR) waits for the queued bytes to be acknowledged: not on the loop
        self._eof_pending, self._eof_sent = False, True
        future = self._loop.run_in_executor(None, self._sock.shutdown, _pysocket.SHUT_WR)
        future.add_done_callback(self._eof_done)

    def _eof_done(self, future: asyncio.Future) -> None:
        exc = future.exception()
        if exc is not None and not self._closed:
            self._fatal_error(exc)

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if not self._protocol_paused and len(self._buffer) > self._high:
            self._protocol_paused = True
            self._call_protocol("pause_writing")

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and len(self._buffer) <= self._low:
            self._protocol_paused = False
            self._call_protocol("resume_writing")

    def _call_protocol(self, name: str) -> None:
        try:
            getattr(self._protocol, name)()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": f"protocol.{name}() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )

    # ---- ending ---------------------------------------------------------------------------
    def close(self) -> None:
        """Stop reading; flush what is buffered, then close (queued bytes are never dropped)."""
        if self._closing:
            return
        self._closing = True
        self.pause_reading()
        if not self._buffer:
            self._finish(None)

    def abort(self) -> None:
        """Close at once, dropping buffered bytes (as asyncio's abort does)."""
        self._force_close(None)

    def _fatal_error(self, exc: BaseException) -> None:
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler(
                {"message": "fatal error on udt.aio transport", "exception": exc, "transport": self}
            )
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._buffer.clear()
        self._closing = True
        self._finish(exc, abort=True)

    def _finish(self, exc: BaseException | None, *, abort: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._reading = False
        self._poller.discard(self._sock)
        self._poller.release()
        self._loop.call_soon(self._connection_lost, exc, abort)

    def _connection_lost(self, exc: BaseException | None, abort: bool) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            close_socket(self._loop, self._sock, abort=abort)
            server, self._server = self._server, None
            if server is not None:
                server._detach()
