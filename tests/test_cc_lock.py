"""A slow Python congestion control on an accepted connection stalls nobody else on the port.

The multiplexer's rule is no Python call while its locks are held (and none in its receive
worker that could wait on the user's code): a user's CC class is instantiated and its ``init()``
run while the connection is private to the thread preparing it."""

from __future__ import annotations

import threading
import time
from typing import ClassVar

import udt
from udt.cc import CongestionControl

LOOP4 = "127.0.0.1"
SLOW_INIT_S = 1.0


class SlowInit(CongestionControl):
    """init() sleeps once the test turns it on (the first, established connection is fast)."""

    slow: ClassVar[bool] = False
    initialised: ClassVar[list[SlowInit]] = []

    def init(self) -> None:
        if SlowInit.slow:
            time.sleep(SLOW_INIT_S)
        SlowInit.initialised.append(self)


def test_slow_cc_init_does_not_stop_the_port():
    SlowInit.slow = False
    SlowInit.initialised = []
    with udt.create_server((LOOP4, 0), options={udt.UDT_CC: SlowInit}) as server:
        server.settimeout(10)
        address = server.getsockname()
        with udt.create_connection(address, timeout=5) as client:
            conn, _ = server.accept()
            with conn:

                def echo() -> None:
                    while True:
                        data = conn.recv(1)
                        if not data:
                            return
                        conn.sendall(data)

                echoer = threading.Thread(target=echo)
                echoer.start()
                gaps: list[float] = []
                second: list[udt.socket] = []

                def connect_second() -> None:
                    second.append(udt.create_connection(address, timeout=10))

                try:
                    client.settimeout(5)
                    for _ in range(20):  # warm up: the round trip is ~ms on loopback
                        client.sendall(b"p")
                        assert client.recv(1) == b"p"
                    SlowInit.slow = True
                    connector = threading.Thread(target=connect_second)
                    connector.start()
                    last = started = time.monotonic()
                    while time.monotonic() - started < SLOW_INIT_S * 1.5:
                        client.sendall(b"p")
                        assert client.recv(1) == b"p"
                        now = time.monotonic()
                        gaps.append(now - last)
                        last = now
                    connector.join(10)
                    assert second, "the second connection did not complete"
                    accepted, _ = server.accept()
                    accepted.close()
                    assert len(SlowInit.initialised) == 2  # its init() did run
                finally:
                    for sock in second:
                        sock.close()
                    client.close()
                    echoer.join(5)
                # the slow init() would stop the receive worker for a whole second
                assert max(gaps) < 0.3, f"a round trip waited {max(gaps):.3f} s"


def test_listener_closes_while_a_cc_init_runs():
    """The accepting thread finishes the init() it is in, drops that connection, and leaves."""
    SlowInit.slow = True
    SlowInit.initialised = []
    server = udt.create_server((LOOP4, 0), options={udt.UDT_CC: SlowInit})
    address = server.getsockname()

    def connect() -> None:
        try:
            udt.create_connection(address, timeout=5).close()
        except OSError:  # refused: the listener went away during the handshake
            pass

    connector = threading.Thread(target=connect)
    connector.start()
    time.sleep(SLOW_INIT_S / 2)  # the handshake took a few ms: its init() is under way
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < SLOW_INIT_S + 1.0
    assert len(SlowInit.initialised) == 1
    assert not [t for t in threading.enumerate() if t.name.endswith("-accept")]
    connector.join(10)
    assert not connector.is_alive()
