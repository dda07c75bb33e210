"""The linger bound of a close (fake clock): only an ACK that says something new restarts it."""

from __future__ import annotations

from udt import _testing

ISN = 7000
CLIENT_ID = 51
SERVER_ID = 52
LINGER = 1_000_000
ST = _testing.STATES


def closing_sender():
    """A server engine with 20 packets written and sent, then closed (CLOSING)."""
    conclusion = _testing.encode_handshake(isn=ISN, req_type=-1, socket_id=CLIENT_ID)
    s = _testing.Endpoint(SERVER_ID, linger_us=LINGER)
    s.accept(_testing.request_from_conclusion(conclusion, ("10.0.0.1", 5000)), 0)
    s.write(b"z" * (20 * s.payload_size), 0)
    for t in range(0, 20_000, 100):
        while s.next_datagram(t) is not None:
            pass
    s.close(20_000)
    assert s.state == ST["CLOSING"]
    return s


def ack(seq, win, ack_no):
    return _testing.encode_control(2, ack_no, SERVER_ID, (seq, 10_000, 5_000, win, 100, 100))


def run_until(s, start, end, feed):
    """Advance the clock in 100 ms steps, feeding feed(t) and running timers."""
    t = start
    while t < end and s.state == ST["CLOSING"]:
        for packet in feed(t):
            s.receive(packet, t)
        s.on_timer(t)
        while s.next_datagram(t) is not None:
            pass
        t += 100_000
    return t


def test_a_repeated_ack_does_not_hold_the_close_open():
    """What a peer whose ACK2s are lost sends: the same ACK again and again.  The close gives
    up one linger time after its start, with the data still unacknowledged."""
    s = closing_sender()
    ended = run_until(s, 20_000, 5_000_000, lambda t: [ack(ISN, 100, 1)])
    assert s.state == ST["CLOSED"]
    assert ended <= 20_000 + LINGER + 200_000
    assert s.pending_send_bytes > 0  # what close() reports as unacknowledged


def test_acks_that_release_data_keep_a_slow_drain_going():
    s = closing_sender()
    step = {"seq": ISN, "no": 1}

    def one_packet_per_600_ms(t):
        if t % 600_000 >= 100_000:
            return []
        step["seq"] += 1
        step["no"] += 1
        return [ack(step["seq"], 100, step["no"])]

    run_until(s, 20_000, 3 * LINGER, one_packet_per_600_ms)
    assert s.state == ST["CLOSING"]  # three linger times later it still drains
    assert s.pending_send_bytes < 20 * s.payload_size


def test_room_freed_by_the_peers_reader_is_progress_too():
    """A receiver whose buffer was full reads slowly: the ACK point stays, the room it reports
    grows, and the close keeps waiting for it."""
    s = closing_sender()
    step = {"win": 0, "no": 1}

    def more_room_every_600_ms(t):
        if t % 600_000 >= 100_000:
            return []
        step["win"] += 1
        step["no"] += 1
        return [ack(ISN, step["win"], step["no"])]

    run_until(s, 20_000, 3 * LINGER, more_room_every_600_ms)
    assert s.state == ST["CLOSING"]
