"""Reliable delivery on a fake clock: bulk transfers through loss, bursts, reordering and
duplication; wrap-around; message mode with TTL; flow control; close, linger, broken links."""

from __future__ import annotations

import random

import pytest

from engine_harness import LinkProfile, Net, connected_pair, invalid_counts, sha, transfer
from udt import _testing

ST = _testing.STATES
EV = _testing.EVENTS
MB = 1 << 20


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.mark.parametrize(
    "name,profile,size",
    [
        ("clean", LinkProfile(delay_us=2000), 8 * MB),
        ("loss1", LinkProfile(loss=0.01, delay_us=5000), 5 * MB),
        ("loss5", LinkProfile(loss=0.05, delay_us=5000), 5 * MB),
        ("loss20", LinkProfile(loss=0.20, delay_us=5000), 3 * MB),
        ("bursts", LinkProfile(burst_enter=0.01, burst_exit=0.2, delay_us=5000), 4 * MB),
        (
            "reorder_dup",
            LinkProfile(reorder=0.05, reorder_delay_us=4000, duplicate=0.05, jitter_us=500, delay_us=3000),
            4 * MB,
        ),
        (
            "everything",
            LinkProfile(
                loss=0.05,
                burst_enter=0.005,
                reorder=0.03,
                duplicate=0.03,
                jitter_us=300,
                delay_us=10000,
                rate_pps=20000,
                queue_packets=200,
            ),
            3 * MB,
        ),
    ],
)
def test_bulk_transfer_is_byte_exact(name, profile, size):
    net = Net(seed=11, profile=profile)
    net, c, s = connected_pair(net)
    data = payload(size, seed=size)
    got = transfer(net, c, s, data, timeout_us=300_000_000)
    assert len(got) == len(data) and sha(got) == sha(data)
    cs, ss = c.stats(net.now), s.stats(net.now)
    assert all(v == 0 for v in invalid_counts(cs).values()), invalid_counts(cs)
    assert all(v == 0 for v in invalid_counts(ss).values()), invalid_counts(ss)
    if profile.loss or profile.burst_enter:
        assert cs["pkt_retrans_total"] > 0 and ss["pkt_sent_nak_total"] > 0
        # retransmissions stay close to what was really lost (no storm of duplicates)
        lost = sum(d.dropped for d in net._directions.values())
        assert cs["pkt_retrans_total"] < 3 * lost + 50
    if name == "clean":
        assert cs["pkt_retrans_total"] == 0
        assert cs["pkt_sent_total"] == -(-size // 1456)


def test_both_directions_at_once():
    net = Net(seed=2, profile=LinkProfile(loss=0.03, delay_us=4000))
    net, c, s = connected_pair(net)
    a, b = payload(2 * MB, 1), payload(2 * MB, 2)
    got_s, got_c = bytearray(), bytearray()
    off = [0, 0]

    def pump():
        for i, (ep, data) in enumerate(((c, a), (s, b))):
            while off[i] < len(data):
                n = ep.write(data[off[i] : off[i] + 65536], net.now)
                if n <= 0:
                    break
                off[i] += n
        for ep, sink in ((s, got_s), (c, got_c)):
            while isinstance(r := ep.read(1 << 20, net.now), bytes) and r:
                sink.extend(r)
        return len(got_s) == len(a) and len(got_c) == len(b)

    assert net.run(120_000_000, pump)
    assert bytes(got_s) == a and bytes(got_c) == b


@pytest.mark.parametrize("isn", [0x7FFFFFFF - 700, 0x7FFFFFFF, 0x40000000 - 5])
def test_sequence_wrap_around(isn):
    net = Net(seed=4, profile=LinkProfile(loss=0.05, delay_us=3000))
    net, c, s = connected_pair(net, isn=isn)
    data = payload(3 * MB, 9)
    assert transfer(net, c, s, data) == data
    assert (
        c.snd_next_seq
        == (isn + c.stats(net.now)["pkt_sent_total"] - c.stats(net.now)["pkt_retrans_total"]) & 0x7FFFFFFF
    )


def test_data_readable_before_any_ack():
    net, c, s = connected_pair()
    c.write(b"hello", net.now)
    d = c.next_datagram(net.now)
    assert s.receive(d, net.now) & EV["READABLE"]
    assert s.read(100, net.now) == b"hello"
    assert s.read(100, net.now) == -6002


# ---- message mode ----
def dgram_pair(net=None, **kw):
    return connected_pair(net, client_options={"sock_type": 2, **kw}, server_options={"sock_type": 2})


def test_message_boundaries_and_truncation():
    net, c, s = dgram_pair()
    sizes = [1, 1456, 1457, 4000, 10_000, 3]
    msgs = [payload(n, n) for n in sizes]
    for m in msgs:
        assert c.write(m, net.now) == len(m)
    got = []
    net.run(
        1_000_000,
        lambda: (
            (r := s.read_message(20_000, net.now)) != -6002
            and not got.append(r)
            and len(got) == len(msgs)
            or len(got) == len(msgs)
        ),
    )
    assert [g[0] for g in got] == msgs
    c.write(b"a" * 5000, net.now)
    net.run(1_000_000, lambda: s.readable_bytes > 0)
    assert s.readable_bytes == 5000
    data, full, truncated = s.read_message(100, net.now)
    assert data == b"a" * 100 and full == 5000 and truncated
    assert s.read_message(100, net.now) == -6002
    assert s.read(10, net.now) == -5009
    stream_net, sc, ss = connected_pair()
    assert ss.read_message(10, stream_net.now) == -5010


def test_message_boundary_bits_on_the_wire():
    net, c, s = dgram_pair()
    net.sent_log = []
    c.write(b"m" * 4000, net.now, inorder=False)
    net.run(100_000, lambda: s.readable_bytes > 0)
    data = [_testing.decode_packet(d) for t, src, dst, d in net.sent_log if not _testing.decode_packet(d)["control"]]
    assert [(p["boundary"], p["inorder"]) for p in data] == [(2, False), (0, False), (1, False)]
    assert len({p["msgno"] for p in data}) == 1


def test_too_large_message_and_full_buffer():
    net, c, s = dgram_pair(snd_buf=16)
    assert c.write(b"x" * (17 * 1456), net.now) == -5012
    assert c.write(b"x" * (10 * 1456), net.now) == 10 * 1456
    assert c.write(b"x" * (7 * 1456), net.now) == -6001
    assert c.write(b"", net.now) == -5003


def data_datagrams(ep, now, count):
    out = []
    for step in range(100):
        if len(out) == count:
            break
        d = ep.next_datagram(now + 10 * step)
        if d is None:
            continue
        if not _testing.decode_packet(d)["control"]:
            out.append(d)
    return out


def test_out_of_order_messages_delivered_when_complete():
    net, c, s = dgram_pair()
    c.write(b"first", net.now, inorder=False)
    c.write(b"second", net.now, inorder=False)
    d1, d2 = data_datagrams(c, net.now, 2)
    s.receive(d2, net.now)  # the first message's packet is late
    assert s.read_message(100, net.now)[0] == b"second"
    s.receive(d1, net.now)
    assert s.read_message(100, net.now)[0] == b"first"
    assert s.read_message(100, net.now) == -6002


def test_in_order_messages_wait_for_their_turn():
    net, c, s = dgram_pair()
    c.write(b"first", net.now, inorder=True)
    c.write(b"second", net.now, inorder=True)
    d1, d2 = data_datagrams(c, net.now, 2)
    s.receive(d2, net.now)
    assert s.read_message(100, net.now) == -6002
    s.receive(d1, net.now)
    assert s.read_message(100, net.now)[0] == b"first"
    assert s.read_message(100, net.now)[0] == b"second"


def test_message_ttl_drop_request():
    """A message whose packets are lost and whose TTL passed is dropped on both sides; the
    messages around it arrive and the connection carries on."""
    net = Net(seed=1, profile=LinkProfile(delay_us=5000))
    net, c, s = dgram_pair(net)
    net.sent_log = []
    c.write(b"A" * 3000, net.now, ttl_us=-1)
    c.write(b"B" * 3000, net.now, ttl_us=20_000)
    c.write(b"C" * 3000, net.now, ttl_us=-1)
    # lose every transmission of message B's packets
    orig = net.transmit

    def transmit(src, dst, data):
        p = _testing.decode_packet(data)
        if not p["control"] and p["payload"][:1] == b"B":
            return
        orig(src, dst, data)

    net.transmit = transmit
    got = []

    def pump():
        while not isinstance(r := s.read_message(10_000, net.now), int):
            got.append(r[0])
        return len(got) == 2

    assert net.run(2_000_000, pump)
    assert got == [b"A" * 3000, b"C" * 3000]
    drops = [
        _testing.decode_packet(d)
        for _, src, _, d in net.sent_log
        if _testing.decode_packet(d)["control"] and _testing.decode_packet(d)["type"] == 7
    ]
    assert drops and drops[0]["length"] == 24
    assert drops[0]["cif"][1] - drops[0]["cif"][0] == 2  # B's three packets
    assert s.stats(net.now)["pkt_dropped_total"] >= 1
    c.write(b"D" * 10, net.now)
    assert net.run(1_000_000, lambda: s.readable_bytes > 0)
    assert s.read_message(100, net.now)[0] == b"D" * 10
    assert c.pending_send_bytes == 0 or net.run(1_000_000, lambda: c.pending_send_bytes == 0)


def test_msgno_wraps_at_2_pow_26():
    net, c, s = dgram_pair()
    c.set_next_msgno((1 << 26) - 2)
    net.sent_log = []
    for i in range(3):
        c.write(bytes([i]) * 10, net.now)
    got = []
    net.run(
        1_000_000,
        lambda: (
            not isinstance(r := s.read_message(100, net.now), int)
            and not got.append(r[0])
            and len(got) == 3
            or len(got) == 3
        ),
    )
    assert got == [bytes([i]) * 10 for i in range(3)]
    msgnos = [
        _testing.decode_packet(d)["msgno"] for _, _, _, d in net.sent_log if not _testing.decode_packet(d)["control"]
    ]
    assert msgnos == [(1 << 26) - 2, (1 << 26) - 1, 1]


# ---- flow control ----
def test_receive_buffer_full_stops_sender_and_resumes():
    net = Net()
    h = net.listen(("10.0.0.2", 9000), rcv_buf=64)
    c = net.endpoint(("10.0.0.1", 5000), ("10.0.0.2", 9000))
    net.connect(c)
    assert net.run(1_000_000, lambda: c.state == ST["CONNECTED"] and h.accepted)
    s = h.accepted[0]
    data = payload(1456 * 500, 3)
    off = 0
    while off < len(data) and (n := c.write(data[off:], net.now)) > 0:
        off += n
    net.run(2_000_000)  # nobody reads
    assert s.readable_bytes <= 64 * 1456
    assert s.stats(net.now)["pkt_recv_total"] < 120
    assert c.flow_window <= 64
    total = bytearray()

    def pump():
        nonlocal off
        while off < len(data) and (n := c.write(data[off:], net.now)) > 0:
            off += n
        while not isinstance(r := s.read(1 << 20, net.now), int) and r:
            total.extend(r)
        return len(total) == len(data)

    assert net.run(30_000_000, pump)
    assert bytes(total) == data


def test_stream_write_accepts_what_fits():
    net, c, s = connected_pair(client_options={"snd_buf": 8})
    n = c.write(b"z" * 100_000, net.now)
    assert n == 8 * 1456
    assert c.write(b"z", net.now) == -6001
    assert c.writable_bytes == 0
    assert net.run(1_000_000, lambda: c.writable_bytes == 8 * 1456)
    assert net.events[id(c)] & EV["WRITABLE"]


def test_small_writes_coalesce_into_full_packets():
    net, c, s = connected_pair()
    c.set_cc(period_us=1000)  # slow pacing: the writes pile up
    c.next_datagram(net.now)
    for _ in range(100):
        assert c.write(b"0123456789", net.now) == 10
    transfer(net, c, s, b"")
    got = bytearray()
    net.run(1_000_000, lambda: (not isinstance(r := s.read(5000, net.now), int) and got.extend(r)) or len(got) >= 1000)
    assert bytes(got) == b"0123456789" * 100
    assert s.stats(net.now)["pkt_recv_total"] <= 2


# ---- closing ----
def test_close_drains_then_shutdown():
    net = Net(seed=3, profile=LinkProfile(loss=0.05, delay_us=5000))
    net, c, s = connected_pair(net)
    data = payload(MB, 5)
    off = 0
    got = bytearray()

    def pump():
        nonlocal off
        while off < len(data) and (n := c.write(data[off : off + 65536], net.now)) > 0:
            off += n
        while not isinstance(r := s.read(1 << 20, net.now), int) and r:
            got.extend(r)
        return off == len(data)

    net.run(60_000_000, pump)
    ev = c.close(net.now)
    assert c.state == ST["CLOSING"] and not ev & EV["CLOSED"]
    assert net.run(60_000_000, lambda: (pump() and False) or s.peer_shutdown)
    assert c.state == ST["CLOSED"] and net.events[id(c)] & EV["CLOSED"]
    while not isinstance(r := s.read(1 << 20, net.now), int) and r:
        got.extend(r)
    assert bytes(got) == data
    assert s.read(10, net.now) == b""  # EOF after the data
    assert s.write(b"x", net.now) == -2001
    assert net.events[id(s)] & EV["PEER_SHUTDOWN"]


CLIENT, SERVER = ("10.0.0.1", 5000), ("10.0.0.2", 9000)  # connected_pair's addresses


def _sent_types(net, src):
    return [_testing.decode_packet(d).get("type") for _, frm, _, d in net.sent_log if frm == src]


def _close_tail(c, now):
    """What a closed endpoint still sends, following its own schedule: [(time, packet)]."""
    out = []
    while (t := c.next_send_time(now)) >= 0:
        now = max(now, t)
        while (d := c.next_datagram(now)) is not None:
            out.append((now, _testing.decode_packet(d)))
    return out


def _read_all(s, net):
    got = bytearray()
    while not isinstance(r := s.read(1 << 20, net.now), int) and r:
        got.extend(r)
    return bytes(got)


def test_close_waits_for_the_peers_reader_before_shutdown():
    """All data acknowledged is not enough: UDT4's blocking recvmsg loses the messages it was
    woken for when SHUTDOWN overtakes it.  close() holds SHUTDOWN (and its ACK2s, so the peer
    keeps reporting its free buffer) until the peer's reader has caught up."""
    net, c, s = connected_pair()
    data = payload(200_000, 9)
    assert c.write(data, net.now) == len(data)
    net.sent_log = []
    c.close(net.now)
    net.run(150_000)  # the reader is busy: no SHUTDOWN yet
    assert c.pending_send_bytes == 0 and c.state == ST["CLOSING"] and not s.peer_shutdown
    full_acks = [t for t in _sent_types(net, SERVER) if t == 2]
    assert len(full_acks) >= 3  # the peer repeats its full ACK ...
    assert _sent_types(net, CLIENT).count(6) < len(full_acks)  # ... as no ACK2 answers it
    assert _read_all(s, net) == data
    t0 = net.now
    assert net.run(100_000, lambda: s.peer_shutdown)  # its next ACK shows the buffer free
    assert net.now - t0 <= 30_000 and c.state == ST["CLOSED"]


def test_close_sends_shutdown_after_the_grace_when_the_reader_stays_busy():
    net, c, s = connected_pair()
    data = payload(50_000, 1)
    c.write(data, net.now)
    assert net.run(1_000_000, lambda: c.pending_send_bytes == 0)
    t0 = net.now
    c.close(net.now)
    assert net.run(1_000_000, lambda: s.peer_shutdown)
    assert net.now - t0 <= 200_000 + 5_000  # SHUTDOWN_GRACE_US after the last ACK
    assert _read_all(s, net) == data  # udt's reader keeps what came before it


def test_close_is_immediate_once_the_peer_has_read_everything():
    net, c, s = connected_pair()
    data = payload(50_000, 2)
    c.write(data, net.now)
    got = bytearray()
    assert net.run(1_000_000, lambda: bool(got.extend(_read_all(s, net))) or len(got) == len(data))
    assert net.run(1_000_000, lambda: c.pending_send_bytes == 0)
    net.run(50_000)  # the ACK after the read reports it
    assert c.close(net.now) & EV["CLOSED"]


def test_first_burst_lost_to_a_peer_not_yet_ready_costs_one_timeout_only():
    """A UDT4 rendezvous peer drops the data that reaches it before its handshake completes.
    The sender learns of it only by EXP; with nothing known about the path yet it must resume
    at full speed, not crawl at 16 packets per the 100 ms RTT guess."""
    net, c, s = connected_pair()
    server_conns = net.hosts[SERVER].conns
    sid = next(k for k, v in server_conns.items() if v is s)
    del server_conns[sid]  # the peer does not know us yet
    data = payload(4 * MB, 4)
    offset = c.write(data, net.now)
    net.run(5_000)  # the first burst goes nowhere
    assert s.readable_bytes == 0
    server_conns[sid] = s
    t0 = net.now
    got = bytearray()

    def pump():
        nonlocal offset
        while offset < len(data) and (n := c.write(data[offset : offset + 65536], net.now)) > 0:
            offset += n
        got.extend(_read_all(s, net))
        return len(got) == len(data)

    assert net.run(20_000_000, pump)
    assert sha(bytes(got)) == sha(data)
    assert c.stats(net.now)["pkt_retrans_total"] >= 16
    assert net.now - t0 < 500_000  # one EXP (0.3 s), then full speed (was 0.79 s)


def test_linger_expires_when_peer_is_gone():
    net, c, s = connected_pair(client_options={"linger_us": 500_000})
    net.endpoints.remove(s)  # the server vanishes
    net.hosts[("10.0.0.2", 9000)].conns.clear()
    c.write(b"x" * 10_000, net.now)
    t0 = net.now
    c.close(net.now)
    net.sent_log = []
    assert net.run(5_000_000, lambda: c.state == ST["CLOSED"])
    assert 500_000 <= net.now - t0 <= 520_000
    net.run(100_000)
    assert _sent_types(net, CLIENT)[-6:] == [8, 8, 5, 5, 5, 5]  # data dropped: reset, SHUTDOWNs


def test_linger_bounds_a_stall_not_a_drain():
    """A drain that takes longer than the linger time but keeps progressing is not cut short."""
    net = Net(profile=LinkProfile(rate_pps=2000, queue_packets=1000, delay_us=5000))
    # the whole payload queued before close: a send buffer that starts big enough for it
    net, c, s = connected_pair(net, client_options={"linger_us": 300_000, "buf_initial": 2048})
    data = payload(2 * MB, 6)  # 1441 packets at 2000 packets/s: > 0.7 s
    assert c.write(data, net.now) == len(data)
    t0 = net.now
    c.close(net.now)
    got = bytearray()
    assert net.run(20_000_000, lambda: bool(got.extend(_read_all(s, net))) or s.peer_shutdown)
    got.extend(_read_all(s, net))
    assert net.now - t0 > 600_000  # well past the 300 ms linger
    assert bytes(got) == data and s.read(10, net.now) == b"" and not s.peer_reset


def test_abort_with_queued_data_resets_the_peer():
    net, c, s = connected_pair(client_options={"linger_us": 0})
    c.write(b"x" * 100_000, net.now)
    ev = c.close(net.now)
    assert ev & EV["CLOSED"] and c.state == ST["CLOSED"]
    tail = _close_tail(c, net.now)
    out = [p for _, p in tail]
    assert [(p["type"], p["info"]) for p in out] == [(8, 2001)] * 2 + [(5, 0)] * 4
    for p in out:
        s.receive(_testing.encode_control(p["type"], p["info"], s.socket_id), net.now)
    assert s.peer_reset and not s.peer_shutdown and s.state == ST["BROKEN"]
    assert s.read(10, net.now) == -2001  # ECONNRESET, not a clean EOF
    assert s.stats(net.now)["invalid_state"] == 0  # the rest of the reset is expected


def test_abort_with_nothing_queued_is_a_clean_shutdown():
    net, c, s = connected_pair(client_options={"linger_us": 0})
    c.close(net.now)
    tail = _close_tail(c, net.now)  # four copies, 10 ms apart: SHUTDOWN has no ACK
    assert [p["type"] for _, p in tail] == [5, 5, 5, 5] and all(p["length"] == 20 for _, p in tail)
    assert [t - net.now for t, _ in tail] == [0, 10_000, 20_000, 30_000]
    for _ in tail:
        s.receive(_testing.encode_control(5, 0, s.socket_id), net.now)
    assert s.peer_shutdown and s.state == ST["BROKEN"] and s.read(10, net.now) == b""
    assert s.stats(net.now)["invalid_state"] == 0  # the copy is expected, not invalid


def test_stragglers_after_the_peers_close_are_late_not_invalid():
    """Reordering and duplication deliver packets after the SHUTDOWN they were sent before:
    counted as late, never as invalid (which is for garbage)."""
    net, c, s = connected_pair()
    net.sent_log = []
    c.write(payload(1456, 3), net.now)
    assert net.run(1_000_000, lambda: c.pending_send_bytes == 0)
    assert _read_all(s, net) == payload(1456, 3)
    data = next(d for _, frm, _, d in net.sent_log if frm == CLIENT and not d[0] & 0x80)
    c.close(net.now)
    assert net.run(1_000_000, lambda: s.peer_shutdown)
    net.run(100_000)  # the other SHUTDOWN copies arrive too
    s.receive(data, net.now)  # and the data again, duplicated and late
    stats = s.stats(net.now)
    assert stats["pkt_late_total"] == 4  # 3 SHUTDOWN copies + the data packet
    assert sum(invalid_counts(stats).values()) == 0


def test_a_duplicated_induction_answer_is_late_not_invalid():
    c = _testing.Endpoint(1, now=0)
    c.connect(SERVER, 0)
    lst = _testing.ListenerShim(b"0123456789abcdef", 1, 1500, 8192, 0)
    _, reply, _ = lst.handle(c.next_datagram(0), CLIENT, 0)
    c.receive(reply, 10)
    c.receive(reply, 20)  # the network delivered it twice
    assert c.state == ST["CONNECTING"]
    stats = c.stats(20)
    assert stats["pkt_late_total"] == 1 and sum(invalid_counts(stats).values()) == 0


def test_shutdown_over_a_hole_is_a_reset():
    """A SHUTDOWN while data the peer sent is still missing (a UDT4 sender whose linger ran
    out) must not read as a clean end of the stream."""
    net, c, s = connected_pair()
    c.write(payload(3 * 1456, 1), net.now)
    packets, t = [], net.now
    while len(packets) < 3:  # following the sender's pacing
        if (d := c.next_datagram(t)) is not None:
            packets.append(d)
        t = max(t + 1, c.next_send_time(t))
    first, _lost, third = packets
    s.receive(first, t)
    s.receive(third, t)
    s.receive(_testing.encode_control(5, 0, s.socket_id), t + 10)
    assert s.peer_reset and not s.peer_shutdown
    assert s.read(1 << 20, t + 10) == payload(3 * 1456, 1)[:1456]
    assert s.read(10, t + 10) == -2001


# ---- liveness ----
def test_idle_connection_keepalives_and_no_broken():
    net, c, s = connected_pair()
    net.sent_log = []
    net.run(30_000_000)
    assert c.state == s.state == ST["CONNECTED"]
    kinds = [_testing.decode_packet(d)["type"] for *_, d in net.sent_log]
    assert set(kinds) == {1}  # only keep-alives while idle
    assert len(kinds) < 30 * 2 * 5  # a few per second, not a flood


@pytest.mark.parametrize("timeout_us", [0, 3_000_000])
def test_broken_detection_timing(timeout_us):
    opts = {"broken_timeout_us": timeout_us} if timeout_us else {}
    net, c, s = connected_pair(client_options=opts)
    net.endpoints.remove(s)
    net.hosts[("10.0.0.2", 9000)].conns.clear()
    c.write(b"x" * 50_000, net.now)
    t0 = net.now
    assert net.run(60_000_000, lambda: c.state == ST["BROKEN"])
    expected = timeout_us or 10_000_000
    assert expected <= net.now - t0 <= expected + 50_000
    assert c.error == 2001 and net.events[id(c)] & EV["BROKEN"]
    assert c.write(b"x", net.now) == -2001
    assert c.poll_events & 8


def test_exp_retransmits_when_acks_vanish():
    """All feedback is lost for 2 s: the sender's EXP re-queues everything unacknowledged,
    keeps retransmitting, and the transfer completes once the path heals."""
    net = Net(seed=8, profile=LinkProfile(delay_us=5000))
    net, c, s = connected_pair(net)
    data = payload(MB, 8)
    c.write(data[:200_000], net.now)
    net.set_profile(LinkProfile(delay_us=5000), reverse=LinkProfile(loss=1.0))
    net._directions.clear()
    net.run(2_000_000)
    assert c.stats(net.now)["pkt_retrans_total"] > 0
    assert c.exp_count > 1
    net.set_profile(LinkProfile(delay_us=5000))
    net._directions.clear()
    got = bytearray()
    off = 200_000

    def pump():
        nonlocal off
        while off < len(data) and (n := c.write(data[off : off + 65536], net.now)) > 0:
            off += n
        while not isinstance(r := s.read(1 << 20, net.now), int) and r:
            got.extend(r)
        return len(got) == len(data)

    assert net.run(60_000_000, pump)
    assert bytes(got) == data


def test_idle_connection_sleeps_about_a_second():
    """No 10 ms ACK tick once everything is acknowledged: the next timer is the keep-alive."""
    net, c, s = connected_pair()
    assert transfer(net, c, s, payload(100_000, 4)) == payload(100_000, 4)
    net.run(3_000_000)
    for ep in (c, s):
        assert ep.next_send_time(net.now) == -1
    wakeups = 0
    end = net.now + 5_000_000
    while net.now < end:
        t = min(ep.next_timer() for ep in (c, s))
        net.run(max(t - net.now, 1))
        wakeups += 1
    assert wakeups <= 5 * 2 * 2


def test_engine_alone_cost_smoke():
    r = _testing.engine_benchmark(5_000_000)
    assert r["bytes"] >= 5_000_000 and r["data_packets"] >= 5_000_000 // 1456


def test_srt_retransmission_flag_does_not_split_a_message():
    """SRT marks retransmitted packets with bit 26 of the message word (R); message numbers
    are compared on 26 bits, so a retransmitted middle packet still completes its message."""
    net, c, s = dgram_pair()
    isn = s.peer_isn
    sid = s.socket_id
    first = _testing.encode_data(isn, 2, True, 5, 0, sid, b"a" * 1456)
    last = _testing.encode_data(isn + 1, 1, True, 5, 0, sid, b"b" * 10)
    flagged = bytearray(last)
    flagged[4] |= 0x04  # R flag: bit 26 of word 1
    s.receive(first, net.now)
    s.receive(bytes(flagged), net.now)
    assert s.read_message(5000, net.now)[0] == b"a" * 1456 + b"b" * 10


@pytest.mark.parametrize("cc", ["udt4", "bbr"])
def test_an_ack_stall_on_a_long_path_resends_a_probe_not_the_window(cc):
    """The receiver's feedback stalls for longer than the EXP period (a receiver starved of CPU,
    a burst of lost ACKs) while a full window is in flight on a 200 ms path.  All of it arrived:
    re-queueing the whole window (what UDT4 does on EXP) would send it all again as duplicates
    and count it all as lost.  Towards a udt peer, which re-reports its loss list by itself, the
    EXP resends a probe only (the first and the last unacknowledged packets)."""
    link = LinkProfile(delay_us=100_000, rate_pps=8000, queue_packets=2000)
    net = Net(seed=3, profile=link)
    net, c, s = connected_pair(net, client_options={"cc": cc})
    data = payload(24 * MB, 5)
    off = 0
    got = bytearray()

    def pump():
        nonlocal off
        while off < len(data) and (n := c.write(data[off : off + 65536], net.now)) > 0:
            off += n
        while not isinstance(r := s.read(1 << 20, net.now), int) and r:
            got.extend(r)
        return len(got) == len(data)

    net.run(3_000_000, pump)  # past startup: a window of several hundred packets in flight
    inflight = c.stats(net.now)["pkt_flight_size"]
    assert inflight > 500
    before_c, before_s = c.stats(net.now), s.stats(net.now)
    net.set_profile(link, reverse=LinkProfile(loss=1.0))  # the feedback stalls for 0.7 s
    net.run(700_000, pump)
    assert c.exp_count > 1  # the EXP did fire
    net.set_profile(link)
    assert net.run(60_000_000, pump)
    assert sha(bytes(got)) == sha(data)
    after_c, after_s = c.stats(net.now), s.stats(net.now)
    duplicates = after_s["pkt_duplicate_total"] - before_s["pkt_duplicate_total"]
    marked_lost = after_c["pkt_snd_loss_total"] - before_c["pkt_snd_loss_total"]
    assert duplicates < 20, (duplicates, inflight)
    assert marked_lost < 20, (marked_lost, inflight)


def test_a_lost_tail_is_recovered_by_one_exp_probe():
    """The last 50 of 400 packets are lost and nothing follows them: no gap for the receiver to
    NAK.  The EXP's probe of the last packet sent shows it the gap; its NAK brings the rest, so
    the tail costs one EXP and about one round trip, not one EXP per packet."""
    link = LinkProfile(delay_us=20_000)
    net = Net(seed=4, profile=link)
    net, c, s = connected_pair(net)
    data = payload(400 * 1456, 9)
    head = 350 * 1456
    assert c.write(data[:head], net.now) == head
    got = bytearray()

    def read() -> bool:
        got.extend(_read_all(s, net))
        return len(got) == len(data)

    assert net.run(5_000_000, lambda: read() or len(got) == head)
    net.set_profile(LinkProfile(delay_us=20_000, loss=1.0), reverse=link)
    assert c.write(data[head:], net.now) == len(data) - head
    assert net.run(5_000_000, lambda: c.next_send_time(net.now) == -1)  # all 50 sent (and lost)
    net.run(25_000)  # the tail is gone; the feedback for the rest has arrived
    net.set_profile(link)
    t0 = net.now
    assert net.run(5_000_000, lambda: read() and c.pending_send_bytes == 0)
    assert bytes(got) == data
    assert net.now - t0 < 300_000 + 4 * 40_000 + 100_000, net.now - t0  # one EXP, ~1 RTT more
    assert 50 <= c.stats(net.now)["pkt_retrans_total"] <= 60  # the tail was lost, and resent once
