"""The kernel's UDP receive buffer follows the receive window (udt/_mux.pyx,
_rcvbuf_for_window): a receive worker that waits for a core must not lose a window's datagrams
to the kernel (RcvbufErrors), and the growth stays within the connection's UDT_RCVBUF."""

from __future__ import annotations

import os
import threading

import udt
from test_socket import connected_pair, recv_exactly

SMALL = 256 << 10  # UDP_RCVBUF asked for before bind: far below the first receive window
INITIAL_WINDOW = 512 * 1500  # INITIAL_RECV_PACKETS x MSS


def _send_and_read(options: dict, size: int = 32 << 20) -> tuple[int, int]:
    """(the server port's UDP receive buffer before, after) a transfer of size bytes."""
    data = os.urandom(1 << 20) * (size >> 20)
    with connected_pair(options=options) as (client, accepted):
        before = accepted.getsockopt(udt.UDP_RCVBUF)
        sender = threading.Thread(target=client.sendall, args=(data,))
        sender.start()
        assert recv_exactly(accepted, len(data)) == data
        sender.join()
        return before, accepted.getsockopt(udt.UDP_RCVBUF)


def test_the_udp_buffer_grows_with_the_receive_window():
    before, after = _send_and_read({udt.UDP_RCVBUF: SMALL})
    assert before < INITIAL_WINDOW  # the kernel reports twice what was asked (its overhead)
    assert after >= 2 * INITIAL_WINDOW, (before, after)


def test_the_growth_stays_within_udt_rcvbuf():
    cap = 2 << 20
    _before, after = _send_and_read({udt.UDP_RCVBUF: SMALL, udt.UDT_RCVBUF: cap})
    assert after <= 2 * cap + (64 << 10), after  # the kernel doubles what it is asked for


def test_growth_starts_from_what_the_socket_has():
    """A channel made without a size (or adopting a socket its owner sized) counts the kernel's
    current buffer as asked for, so growing towards a window never lowers it."""
    from udt._net import Channel

    with Channel(udt.AF_INET) as channel:
        assert channel.rcvbuf_asked == channel.rcvbuf // 2 > 0
    with Channel(udt.AF_INET, rcvbuf=SMALL) as channel:
        assert channel.rcvbuf_asked == SMALL
