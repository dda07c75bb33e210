"""Module-level state shared by every udt.dgram socket, kept in one place: the registry of live
sockets with the shutdown hook that closes the unref'd ones, and the per-thread receive buffer."""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from udt.dgram.socket import Socket

_MAX_DATAGRAM = 65536  # larger than any UDP payload (65507 IPv4, 65527 IPv6)

_live_sockets: weakref.WeakSet[Socket] = weakref.WeakSet()


def _close_unreferenced() -> None:
    """At interpreter shutdown, before non-daemon threads are joined: close unref'd sockets."""
    for sock in list(_live_sockets):
        if not sock._referenced:
            try:
                sock.close()
            except Exception:  # shutting down: never block the exit on a failing close
                pass


if hasattr(threading, "_register_atexit"):
    threading._register_atexit(_close_unreferenced)
else:  # pragma: no cover - every supported CPython has it
    import atexit

    atexit.register(_close_unreferenced)


_thread_buffers = threading.local()


def _receive_buffer() -> memoryview:
    """A per-thread buffer large enough for any datagram (pull-mode receives share nothing)."""
    buffer = getattr(_thread_buffers, "buffer", None)
    if buffer is None:
        buffer = _thread_buffers.buffer = memoryview(bytearray(_MAX_DATAGRAM))
    return buffer
