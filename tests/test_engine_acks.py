"""ACK, light ACK, ACK2 and RTT, NAK encoding/validation/re-report, flow window (protocol.md §5-§6)."""

from __future__ import annotations

from engine_harness import LinkProfile, Net, connected_pair
from udt import _testing

ISN = 1000
CLIENT_ID = 77
SERVER_ID = 88


def server(now=0, **kw):
    """A server engine accepted from a hand-made conclusion (client ISN 1000, ID 77)."""
    conclusion = _testing.encode_handshake(isn=ISN, req_type=-1, socket_id=CLIENT_ID)
    s = _testing.Endpoint(SERVER_ID, now=now, **kw)
    s.accept(_testing.request_from_conclusion(conclusion, ("10.0.0.1", 5000)), now)
    return s


def client(now=0, **kw):
    """A client engine connected by hand (its ISN 1000, the server's ID 88)."""
    c = _testing.Endpoint(CLIENT_ID, now=now, **kw)
    c.connect(("10.0.0.2", 9000), now, isn=ISN)
    c.next_datagram(now)
    c.receive(_testing.encode_handshake(isn=ISN, req_type=1, socket_id=SERVER_ID, cookie=5, dst=CLIENT_ID), now)
    c.next_datagram(now)
    c.receive(_testing.encode_handshake(isn=ISN, req_type=-1, socket_id=SERVER_ID, cookie=5, dst=CLIENT_ID), now)
    assert c.state == _testing.STATES["CONNECTED"]
    return c


def data(seq, n=1456, boundary=0):
    return _testing.encode_data(seq, boundary, False, 1, 0, SERVER_ID, b"d" * n)


def out(ep, now):
    res = []
    while (d := ep.next_datagram(now)) is not None:
        res.append(_testing.decode_packet(d))
    return res


def send_all(ep, start, steps=200):
    res = []
    for t in range(start, start + steps):
        res += out(ep, t)
    return res


def send_until(ep, start, end):
    """Everything ep sends from start to end, following its own send schedule."""
    res, t = [], start
    while t <= end:
        res += out(ep, t)
        nxt = ep.next_send_time(t)
        if nxt < 0:
            break
        t = max(nxt, t + 1)
    return res


def acks(packets, light=None):
    res = [p for p in packets if p["control"] and p["type"] == 2]
    if light is None:
        return res
    return [p for p in res if (p["info"] == 0) == light]


def test_rtt_from_ack2_follows_the_spec_formulas():
    s = server()
    s.receive(data(ISN), 100)
    s.on_timer(10_000)
    (ack,) = acks(out(s, 10_000))
    assert ack["info"] == 1 and ack["cif"][:3] == [ISN + 1, 100_000, 50_000]
    s.receive(_testing.encode_control(6, 1, SERVER_ID), 13_000)
    assert (s.rtt_us, s.rttvar_us) == (3000, 1500)  # first sample replaces the guess
    s.receive(data(ISN + 1), 15_000)
    s.on_timer(20_000)
    (ack,) = acks(out(s, 20_000))
    assert ack["info"] == 2 and ack["cif"][1:3] == [3000, 1500]
    s.receive(_testing.encode_control(6, 2, SERVER_ID), 25_000)
    assert s.rtt_us == (7 * 3000 + 5000) // 8
    assert s.rttvar_us == (3 * 1500 + abs(5000 - 3000)) // 4
    # a duplicated or unknown ACK2 changes nothing
    s.receive(_testing.encode_control(6, 2, SERVER_ID), 40_000)
    s.receive(_testing.encode_control(6, 99, SERVER_ID), 40_000)
    assert s.rtt_us == (7 * 3000 + 5000) // 8
    assert s.stats(40_000)["invalid_ack2"] == 1


def test_sender_smooths_rtt_from_acks_and_answers_with_ack2():
    c = client()
    c.write(b"x" * 1456 * 4, 0)
    send_all(c, 0)
    full = _testing.encode_control(2, 1, CLIENT_ID, [ISN + 2, 20_000, 4_000, 500, 0, 0])
    c.receive(full, 30_000)
    assert (c.rtt_us, c.rttvar_us) == (20_000, 4_000)
    assert c.flow_window == 500 and c.snd_una == ISN + 2
    p = out(c, 30_000)
    assert p[0]["type"] == 6 and p[0]["info"] == 1 and p[0]["length"] == 20
    c.receive(_testing.encode_control(2, 2, CLIENT_ID, [ISN + 3, 12_000, 1_000, 400]), 40_000)
    # the receiver's estimate is already smoothed (ACK2 round trips): the sender adopts it
    assert (c.rtt_us, c.rttvar_us) == (12_000, 1_000)
    assert c.flow_window == 400


def test_light_ack_every_64_packets():
    s = server()
    for i in range(200):
        s.receive(data(ISN + i), 10 + i)
    light = acks(out(s, 300), light=True)
    assert len(light) == 1
    assert light[0]["length"] == 20 and light[0]["info"] == 0 and light[0]["cif"] == [ISN + 200]
    s = server()
    got = []
    for i in range(200):
        s.receive(data(ISN + i), 10 + i)
        got += acks(out(s, 10 + i), light=True)
    assert [p["cif"][0] for p in got] == [ISN + 64, ISN + 128, ISN + 192]


def test_full_ack_not_repeated_before_ack2_except_after_rtt_4rttvar():
    s = server()
    s.receive(data(ISN), 100)
    s.on_timer(10_000)
    assert len(acks(out(s, 10_000), light=False)) == 1
    for t in range(20_000, 300_000, 10_000):  # RTT + 4 RTTVar = 300 ms initially
        s.on_timer(t)
        assert acks(out(s, t)) == []
    s.on_timer(310_000)
    again = acks(out(s, 310_000))
    assert len(again) == 1 and again[0]["cif"][0] == ISN + 1 and again[0]["info"] == 2
    s.receive(_testing.encode_control(6, 2, SERVER_ID), 311_000)
    for t in range(320_000, 2_000_000, 10_000):  # acknowledged: silence
        s.on_timer(t)
        assert acks(out(s, t)) == []


def test_six_words_only_when_10ms_passed_since_last():
    s = server()
    s.receive(data(ISN), 100)
    s.on_timer(10_000)
    assert acks(out(s, 10_000))[0]["length"] == 40
    s.receive(data(ISN + 1, n=10, boundary=3), 12_000)  # short end of message: ACK now
    quick = acks(out(s, 12_000), light=False)
    assert len(quick) == 1 and quick[0]["length"] == 32 and quick[0]["cif"][0] == ISN + 2


def test_available_buffer_word_and_minimum_2():
    s = server(rcv_buf=32)
    for i in range(31):
        s.receive(data(ISN + i), 100 + i)
    s.on_timer(10_000)
    (ack,) = acks(out(s, 10_000), light=False)
    assert ack["cif"][3] == 2  # 32 - 31 - 1 = 0 -> at least 2
    s.read(1 << 20, 10_000)
    s.receive(data(ISN + 31), 10_500)
    s.on_timer(20_000)
    (ack,) = acks(out(s, 20_000), light=False)
    assert ack["cif"][3] == 32 - 0 - 1 - 1 + 1 - 1 or ack["cif"][3] >= 29


def test_ack_beyond_sent_is_invalid_and_ignored():
    c = client()
    c.write(b"x" * 1456 * 3, 0)
    send_all(c, 0)
    c.receive(_testing.encode_control(2, 1, CLIENT_ID, [ISN + 10, 1000, 100, 100]), 100)
    assert c.snd_una == ISN and c.stats(100)["invalid_ack_range"] == 1
    c.receive(_testing.encode_control(2, 1, CLIENT_ID, [ISN + 3, 1000, 100, 100]), 200)
    assert c.snd_una == ISN + 3 and c.pending_send_bytes == 0
    # bad CIF sizes
    c.receive(_testing.encode_control(2, 1, CLIENT_ID, [ISN, 1, 2]), 300)
    c.receive(_testing.encode_control(2, 1, CLIENT_ID, [])[: -0 or None] + b"", 300)
    assert c.stats(300)["invalid_length"] >= 1


def test_nak_validation():
    c = client()
    c.write(b"x" * 1456 * 10, 0)
    send_all(c, 0)
    sent_last = ISN + 9
    bad = [
        [ISN + 5 | 0x80000000, ISN + 3],  # first > last
        [ISN + 5 | 0x80000000, sent_last + 1],  # beyond last sent
        [sent_last + 3],  # single beyond last sent
        [ISN + 2 | 0x80000000],  # truncated range
        [ISN + 2 | 0x80000000, (ISN + 3) | 0x80000000],  # range end flagged
    ]
    for cif in bad:
        c.receive(_testing.encode_control(3, 0, CLIENT_ID, cif), 5000)
    st = c.stats(5000)
    assert st["invalid_nak_range"] == len(bad) and c.snd_loss_length == 0
    assert st["pkt_recv_nak_total"] == 0
    c.receive(_testing.encode_control(3, 0, CLIENT_ID, [ISN + 1, (ISN + 4) | 0x80000000, ISN + 6]), 6000)
    assert c.snd_loss_length == 4
    resent = [p["seq"] for p in send_until(c, 7000, 2_000_000) if not p["control"]]
    assert resent[:4] == [ISN + 1, ISN + 4, ISN + 5, ISN + 6]  # retransmissions first
    assert c.stats(7000)["pkt_retrans_total"] == 4


def test_nak_reported_again_until_repaired():
    s = server()
    s.receive(data(ISN), 100)
    s.receive(data(ISN + 3), 200)
    first = [p for p in out(s, 200) if p["type"] == 3]
    assert first[0]["cif"] == [(ISN + 1) | 0x80000000, ISN + 2]
    # no retransmission arrives: the whole loss list is reported again after the NAK interval
    times = []
    t = 200
    while t < 1_500_000:
        t = s.next_timer()
        s.on_timer(t)
        for p in out(s, t):
            if p["type"] == 3:
                assert p["cif"] == [(ISN + 1) | 0x80000000, ISN + 2]
                times.append(t)
    assert len(times) >= 3
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g >= 20_000 for g in gaps)
    s.receive(data(ISN + 1), t + 1)
    s.receive(data(ISN + 2), t + 2)
    t2 = t + 2
    for _ in range(50):
        t2 = s.next_timer()
        s.on_timer(t2)
        assert not [p for p in out(s, t2) if p["type"] == 3]
    assert s.read(1 << 20, t2) == b"d" * 1456 * 4


def test_ack_pairs_stay_consistent_in_a_real_exchange():
    net = Net(seed=4, profile=LinkProfile(delay_us=7000, loss=0.02))
    net, c, s = connected_pair(net)
    net.sent_log = []
    from engine_harness import transfer

    transfer(net, c, s, bytes(3_000_000))
    full = [
        _testing.decode_packet(d)
        for _, src, _, d in net.sent_log
        if _testing.decode_packet(d)["control"]
        and _testing.decode_packet(d)["type"] == 2
        and _testing.decode_packet(d)["info"] != 0
    ]
    ack2 = [
        _testing.decode_packet(d)["info"]
        for _, src, _, d in net.sent_log
        if _testing.decode_packet(d)["control"] and _testing.decode_packet(d)["type"] == 6
    ]
    numbers = [p["info"] for p in full]
    assert numbers == list(range(1, len(numbers) + 1))
    assert set(ack2) <= set(numbers)
    # the receiver's RTT converged on the real 14 ms round trip
    assert 12_000 <= s.rtt_us <= 20_000
    assert 12_000 <= c.rtt_us <= 25_000
