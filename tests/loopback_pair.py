"""One connected pair of real udt sockets on loopback, optionally through a relay: the setup
that the socket-level tests of one feature (direct sends, encryption) share, written once so a
fix to it (an accept timeout, the close order) reaches every test that uses it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import udt

LOOP = "127.0.0.1"


@contextlib.contextmanager
def connected_pair(
    client_options: dict | None = None,
    server_options: dict | None = None,
    *,
    via: Callable[[tuple], Any] | None = None,
    type: int = udt.SOCK_STREAM,
) -> Iterator[tuple[udt.socket, udt.socket]]:
    """(client, accepted): a server on loopback, ``via(server address)`` started between them if
    given (anything with ``.address`` and ``.close()``, e.g. ``udt.tools.impair.Relay``), a client
    connected to it (or to the relay) and the server's accepted socket.  server_options default
    to client_options.  Both sockets are closed before the relay, the relay before the server,
    so a close's SHUTDOWN still has its path."""
    if server_options is None:
        server_options = client_options
    with udt.create_server((LOOP, 0), type=type, options=server_options) as server:
        server.settimeout(20)
        relay = via(server.getsockname()) if via else None
        try:
            target = relay.address if relay else server.getsockname()
            with udt.create_connection(target, timeout=10, type=type, options=client_options) as client:
                conn, _ = server.accept()
                with conn:
                    yield client, conn
        finally:
            if relay:
                relay.close()


def send_and_receive(client: udt.socket, conn: udt.socket, payload: bytes, timeout: float) -> bytes:
    """``payload`` sent on ``client`` and read on ``conn`` by a second thread (so neither side's
    buffers bound the transfer); what ``conn`` received, up to ``len(payload)`` or end of stream."""
    got = bytearray()

    def read() -> None:
        conn.settimeout(timeout)
        while len(got) < len(payload) and (chunk := conn.recv(1 << 20)):
            got.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    client.sendall(payload)
    client.flush(timeout=timeout)
    reader.join(timeout)
    return bytes(got)
