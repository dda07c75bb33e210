"""A NAT whose mapping moves: the rebinding tests of test_faults (plaintext) and test_crypto
(encrypted) move one client to a new public port in the middle of a transfer."""

from __future__ import annotations

import select
import socket
import threading


class RebindingNat:
    """A one-client UDP forwarder that can move the client to a new public port mid-transfer,
    as a NAT does when its mapping expires (nothing else is impaired)."""

    def __init__(self, target) -> None:
        self.target = target
        self.inside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.inside.bind(("127.0.0.1", 0))
        self.address = self.inside.getsockname()
        self.outside = [self._new_outside()]
        self.client = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rebinding-nat")
        self.thread.start()

    @staticmethod
    def _new_outside():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0)
        return sock

    def rebind(self) -> None:
        self.outside.append(self._new_outside())  # the old mapping still carries replies

    def _run(self) -> None:
        self.inside.settimeout(0)
        while not self.stopping.is_set():
            socks = [self.inside, *self.outside]
            ready, _, _ = select.select(socks, [], [], 0.05)
            for sock in ready:
                try:
                    data, source = sock.recvfrom(65536)
                except BlockingIOError:
                    continue
                if sock is self.inside:
                    self.client = source
                    self.outside[-1].sendto(data, self.target)
                elif self.client is not None:
                    self.inside.sendto(data, self.client)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for sock in (self.inside, *self.outside):
            sock.close()
