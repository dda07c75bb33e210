"""A hostile or broken peer cannot make the engine use more than its own configured limits:
huge advertised flow windows and MSS, and data for sequence numbers far ahead (fake clock)."""

from __future__ import annotations

from engine_harness import invalid_counts
from udt import _testing

ISN = 5000
CLIENT_ID = 41
SERVER_ID = 42
HUGE = 2**31 - 1
BUF = 64  # packets in each of our buffers: the limit the peer must not push us past


def accepted(**kw):
    """A server engine with small buffers, accepted from a conclusion claiming a huge window and MSS."""
    conclusion = _testing.encode_handshake(isn=ISN, req_type=-1, socket_id=CLIENT_ID, ffs=HUGE, mss=65535)
    s = _testing.Endpoint(SERVER_ID, snd_buf=BUF, rcv_buf=BUF, ffs=BUF, **kw)
    s.accept(_testing.request_from_conclusion(conclusion, ("10.0.0.1", 5000)), 0)
    return s


def data(seq, n=1000):
    return _testing.encode_data(seq, 0, False, 1, 0, SERVER_ID, b"d" * n)


def full_ack(win, ack_no=1):
    """A 6-word ACK of nothing new (ack = our ISN) advertising win packets of free buffer."""
    return _testing.encode_control(2, ack_no, SERVER_ID, (ISN, 10_000, 5_000, win, 100, 100))


def test_huge_advertised_window_and_mss_are_capped_by_our_options():
    s = accepted()
    assert s.mss == 1500  # the smaller of ours and the peer's
    s.receive(full_ack(HUGE), 1000)
    taken = s.write(b"x" * (100 * BUF * 1456), 1000)
    assert taken <= BUF * s.payload_size  # the send ring holds BUF packets, whatever the window
    assert s.pending_send_bytes == taken
    sent = set()
    for t in range(1000, 200_000, 50):
        while (d := s.next_datagram(t)) is not None:
            packet = _testing.decode_packet(d)
            if not packet["control"]:
                sent.add(packet["seq"])
    assert 0 < len(sent) <= BUF  # never more in flight than the ring holds


def test_data_far_ahead_is_dropped_without_growing_the_loss_list():
    s = accepted()
    for offset in (10_000_000, 2**30, BUF * 3):
        s.receive(data((ISN + offset) % 2**31), 1000)
    counts = invalid_counts(s.stats(1000))
    assert counts["data_seq"] + counts["buffer_full"] == 3
    assert s.rcv_loss_length == 0 and s.readable_bytes == 0


def test_gaps_across_the_whole_window_stay_within_the_receive_ring():
    s = accepted()
    for k in range(0, 4 * BUF, 2):  # every other packet, past the end of the ring
        s.receive(data(ISN + 1 + k), 1000 + k)
    assert s.rcv_loss_length <= BUF
    assert invalid_counts(s.stats(5000))["buffer_full"] > 0
