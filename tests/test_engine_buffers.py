"""Buffers that scale with the path (udt/core/buffers.pxd) on the fake clock: the send and receive
limits start small, grow with bandwidth x RTT up to the configured caps, never grow for an idle,
application-limited or slowly read connection, and give their memory back after idle; the data
stays intact across growth, and a forged window or data far ahead cannot push them past the caps."""

from __future__ import annotations

import hashlib
import os

import pytest

from engine_harness import LinkProfile, Net, connected_pair, invalid_counts, sha, transfer
from udt import _testing
from udt.cc import CongestionControl

PAYLOAD = 1456
INITIAL = 512  # INITIAL_RECV_PACKETS: where the receive limit starts
INITIAL_SEND = 4096  # INITIAL_SEND_PACKETS
CAP = 65536  # UDT_SNDBUF / UDT_RCVBUF / UDT_FC (the defaults), packets
RATE = 10_000  # bottleneck, packets/s (~117 Mbit/s of payload)
DELAY = 50_000  # one way: RTT 100 ms, so the path holds RATE * 0.1 = 1000 packets
BDP = RATE * 2 * DELAY // 1_000_000


def long_fat_pair(cc: str = "udt4", seed: int = 1, **client):
    net = Net(
        seed=seed,
        profile=LinkProfile(delay_us=DELAY, rate_pps=RATE, queue_packets=RATE // 10),
        reverse=LinkProfile(delay_us=DELAY),
    )
    caps = {"snd_buf": CAP, "rcv_buf": CAP, "ffs": CAP}
    return connected_pair(net, client_options={"cc": cc, **caps, **client}, server_options=dict(caps))


def pump_for(net, c, s, seconds: float, app_pps: float = 0.0, read: bool = True) -> int:
    """Write as fast as c takes it (or app_pps packets/s), read everything at s; packets read."""
    got = 0
    written = 0.0
    last = net.now
    block = bytes(PAYLOAD * 16)

    def pump() -> bool:
        nonlocal got, written, last
        if app_pps:
            written += app_pps * (net.now - last) / 1e6
            while written >= 16 and c.write(block, net.now) > 0:
                written -= 16
        else:
            while c.write(block, net.now) > 0:
                pass
        last = net.now
        while read and not isinstance(r := s.read(1 << 20, net.now), int) and r:
            got += len(r)
        return False

    net.run(int(seconds * 1e6), pump)
    return got // PAYLOAD


def test_a_connection_holds_no_buffer_memory_until_data_moves():
    net, c, s = long_fat_pair()
    net.run(3_000_000)  # idle: keep-alives only
    for ep in (c, s):
        b = ep.buffers
        assert b["snd_capacity"] == b["rcv_capacity"] == CAP
        assert b["snd_limit"] == INITIAL_SEND and b["rcv_limit"] == INITIAL
        assert b["snd_chunks"] == b["rcv_chunks"] == 0
        assert not b["snd_directory"] and not b["rcv_directory"]
        assert b["snd_loss_capacity"] == b["rcv_loss_capacity"] == 32
    # the handshake still announces the cap (a UDT4 sender's window is capped by it), the ACKs
    # the limit
    assert c.flow_window == CAP


def test_limits_grow_with_bandwidth_times_rtt_and_fill_the_path():
    net, c, s = long_fat_pair()
    pump_for(net, c, s, 3.0)
    rate = pump_for(net, c, s, 2.0) / 2.0
    assert rate > 0.7 * RATE  # DAIMD's own share of this path, the same with fixed buffers
    snd, rcv = c.buffers, s.buffers
    assert rcv["rcv_limit"] >= BDP and c.flow_window >= BDP
    assert snd["snd_limit"] >= BDP
    # sized by the path (its RTT doubles when DAIMD fills the 100 ms queue), not by the caps
    assert rcv["rcv_limit"] <= CAP // 4 and snd["snd_limit"] <= CAP // 4
    # memory follows what is held: chunks of 64 packets, no more than the limits allow
    assert snd["snd_chunks"] <= snd["snd_limit"] // 64 + 2
    assert rcv["rcv_chunks"] <= rcv["rcv_limit"] // 64 + 2


def test_bbr_is_not_window_limited_either():
    net, c, s = long_fat_pair("bbr")
    pump_for(net, c, s, 3.0)
    rate = pump_for(net, c, s, 2.0) / 2.0
    assert rate > 0.95 * RATE
    assert s.buffers["rcv_limit"] <= CAP // 4 and c.buffers["snd_limit"] <= CAP // 4


def test_a_steady_transfer_reuses_its_chunks():
    """No allocation per packet: after the ramp, the chunks held stay the same while many times
    their capacity moves through them."""
    net, c, s = long_fat_pair()
    pump_for(net, c, s, 3.0)
    held = (c.buffers["snd_chunks"], s.buffers["rcv_chunks"])
    moved = pump_for(net, c, s, 2.0)
    assert moved > 2 * 64 * max(held)
    assert c.buffers["snd_chunks"] <= held[0] and s.buffers["rcv_chunks"] <= held[1]


def test_no_growth_for_an_application_limited_sender():
    net, c, s = long_fat_pair()
    got = pump_for(net, c, s, 3.0, app_pps=RATE / 50)
    assert got > 0.9 * 3.0 * RATE / 50
    assert c.buffers["snd_limit"] == INITIAL_SEND
    assert s.buffers["rcv_limit"] == INITIAL
    assert c.buffers["snd_chunks"] <= 4 and s.buffers["rcv_chunks"] <= 4


def test_no_growth_for_a_reader_that_does_not_read():
    net, c, s = long_fat_pair()
    pump_for(net, c, s, 3.0, read=False)
    assert s.buffers["rcv_limit"] == INITIAL  # what sits unread is the reader's, not the path's
    # (plus the 2-packet probes a zero window still lets through, as in UDT4)
    assert s.readable_bytes <= (INITIAL + 64) * PAYLOAD
    assert s.buffers["rcv_chunks"] <= INITIAL // 64 + 1
    # the sender is flow-controlled: its window stays small, and so does its queue
    assert c.buffers["snd_limit"] == INITIAL_SEND


def test_memory_and_limits_return_after_idle():
    net, c, s = long_fat_pair("bbr", seed=2)
    net.set_profile(
        LinkProfile(delay_us=DELAY, rate_pps=RATE, queue_packets=RATE // 10, loss=0.01),
        LinkProfile(delay_us=DELAY, loss=0.01),
    )
    pump_for(net, c, s, 3.0)
    assert c.buffers["snd_limit"] > INITIAL_SEND and s.buffers["rcv_limit"] > INITIAL
    assert c.buffers["snd_chunks"] > 0 and s.buffers["rcv_chunks"] > 0
    pump_for(net, c, s, 5.0, app_pps=1e-9)  # the sender writes nothing more: drain, then idle
    assert c.pending_send_bytes == 0 and s.readable_bytes == 0
    for ep in (c, s):
        b = ep.buffers
        assert b["snd_limit"] == INITIAL_SEND and b["rcv_limit"] == INITIAL
        assert b["snd_chunks"] == b["rcv_chunks"] == 0
        assert not b["snd_directory"] and not b["rcv_directory"]
        assert b["snd_loss_capacity"] == b["rcv_loss_capacity"] == 32
    # and the connection works as before
    data = os.urandom(3 * 1024 * 1024)
    assert sha(transfer(net, c, s, data)) == sha(data)


@pytest.mark.parametrize(("cc", "loss"), [("udt4", 0.0), ("bbr", 0.02)])
def test_data_intact_across_growth(cc, loss):
    net = Net(
        seed=7,
        profile=LinkProfile(delay_us=20_000, rate_pps=20_000, queue_packets=2000, loss=loss, reorder=0.01),
        reverse=LinkProfile(delay_us=20_000, loss=loss),
    )
    caps = {"snd_buf": CAP, "rcv_buf": CAP, "ffs": CAP}
    net, c, s = connected_pair(net, client_options={"cc": cc, **caps}, server_options=dict(caps))
    data = os.urandom(16 * 1024 * 1024)
    got = transfer(net, c, s, data, chunk=1 << 20)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert s.buffers["rcv_limit"] > INITIAL  # it did grow on the way


def test_messages_intact_across_growth():
    net = Net(seed=3, profile=LinkProfile(delay_us=20_000, rate_pps=20_000, queue_packets=2000, loss=0.01))
    opts = {"sock_type": 2, "snd_buf": CAP, "rcv_buf": CAP, "ffs": CAP}
    net, c, s = connected_pair(net, client_options=dict(opts), server_options=dict(opts))
    messages = [os.urandom(1000 + 7919 * k % 60000) for k in range(600)]
    received: list[bytes] = []
    pending = list(messages)

    def pump() -> bool:
        while pending and c.write(pending[0], net.now) > 0:
            pending.pop(0)
        while not isinstance(r := s.read_message(1 << 17, net.now), int):
            received.append(r[0])
        return len(received) == len(messages)

    assert net.run(60_000_000, pump)
    assert received == messages
    # one message bigger than the current limit still goes when the buffer is empty
    big = os.urandom(PAYLOAD * (INITIAL_SEND + 100))
    net.run(3_000_000)
    assert c.write(big, net.now) == len(big)


def test_fixed_buffers_when_the_initial_limit_is_the_cap():
    net, c, s = connected_pair(
        Net(),
        client_options={"snd_buf": 4096, "buf_initial": 4096},
        server_options={"rcv_buf": 4096, "buf_initial": 4096},
    )
    assert c.write(bytes(PAYLOAD * 4096), net.now) == PAYLOAD * 4096
    assert c.buffers["snd_limit"] == 4096 and s.buffers["rcv_limit"] == 4096


SERVER_ID = 42
ISN = 5000


def accepted(cap: int = 1024):
    conclusion = _testing.encode_handshake(isn=ISN, req_type=-1, socket_id=41, ffs=2**31 - 1, mss=1500)
    s = _testing.Endpoint(SERVER_ID, snd_buf=cap, rcv_buf=cap, ffs=cap)
    s.accept(_testing.request_from_conclusion(conclusion, ("10.0.0.1", 5000)), 0)
    return s


def test_a_forged_window_does_not_grow_the_send_buffer_past_its_cap():
    s = accepted()
    s.receive(_testing.encode_control(2, 1, SERVER_ID, (ISN, 10_000, 5_000, 2**31 - 1, 100, 100)), 1000)
    for _ in range(50):
        s.write(bytes(PAYLOAD * 512), 1000)
    assert s.buffers["snd_limit"] <= 1024
    assert s.pending_send_bytes <= 1024 * s.payload_size
    assert s.buffers["snd_chunks"] <= 1024 // 64


def test_data_scattered_over_the_ring_allocates_at_most_the_ring():
    s = accepted()
    for k in range(0, 4 * 1024, 63):  # one packet per chunk and beyond the ring
        s.receive(_testing.encode_data((ISN + 1 + k) % 2**31, 0, False, 1, 0, SERVER_ID, b"d" * 1000), 1000 + k)
    b = s.buffers
    assert b["rcv_chunks"] <= 1024 // 64
    assert b["rcv_limit"] <= 1024
    assert invalid_counts(s.stats(5000))["buffer_full"] > 0
    assert b["rcv_loss_capacity"] <= 1024 // 2 + 2


def test_the_default_caps_leave_a_1_gbit_200_ms_path_unlimited():
    """The caps are what autotuning may grow to: with the defaults a 1 Gbit/s x 200 ms path
    (25 MB, ~17,000 packets at MSS 1500) fits twice over in the flow window and both buffers."""
    from udt.options import OPTION_SPECS, SocketOption

    bdp = int(1e9 / 8 * 0.2 / PAYLOAD)
    assert 16_000 < bdp < 18_000
    assert OPTION_SPECS[SocketOption.UDT_FC].default >= 2 * bdp
    for option in (SocketOption.UDT_SNDBUF, SocketOption.UDT_RCVBUF):
        assert OPTION_SPECS[option].default // PAYLOAD >= 2 * bdp
    # and the engine takes them as caps, not allocations: nothing is held before data moves
    net, c, s = connected_pair(
        Net(),
        client_options={"snd_buf": 65536, "rcv_buf": 65536, "ffs": 65536},
        server_options={"snd_buf": 65536, "rcv_buf": 65536, "ffs": 65536},
    )
    assert c.flow_window == 65536 and s.flow_window == 65536
    assert c.buffers["snd_chunks"] == s.buffers["rcv_chunks"] == 0


def test_the_flow_window_keeps_up_with_bbr_startup():
    """During startup BBR's window doubles every round and asks for 2.89 times what it
    delivered; a receive limit grown to only twice the last round's reading trailed it for the
    whole ramp (the sender learns of the room an RTT late): 25 % of the steps below the path's
    BDP were flow-window-limited.  While the data reaches the edge offered a round trip ago
    (the sender is window-limited) the limit grows faster; once the path is full (in flight at
    least the BDP) the path sets the pace whatever the windows say."""
    rate, delay = 40_000, 100_000  # ~470 Mbit/s of payload, RTT 200 ms: 8,000 packets in flight
    bdp = rate * 2 * delay // 1_000_000
    net = Net(
        seed=3,
        profile=LinkProfile(delay_us=delay, rate_pps=rate, queue_packets=rate // 10),
        reverse=LinkProfile(delay_us=delay),
    )
    caps = {"snd_buf": CAP, "rcv_buf": CAP, "ffs": CAP}
    net, c, s = connected_pair(net, client_options={"cc": "bbr", **caps}, server_options=dict(caps))
    block = bytes(PAYLOAD * 64)
    limited = total = 0
    got = 0
    most_in_flight = 0

    def pump() -> bool:
        nonlocal limited, total, got, most_in_flight
        while c.write(block, net.now) > 0:
            pass
        while not isinstance(r := s.read(1 << 20, net.now), int) and r:
            got += len(r)
        total += 1
        in_flight = (c.snd_next_seq - c.snd_una) % (1 << 31)
        most_in_flight = max(most_in_flight, in_flight)
        if in_flight >= c.flow_window - 1 and c.flow_window < c.cwnd and in_flight < bdp:
            limited += 1  # held back by the receiver's window, the congestion window and path open
        return False

    net.run(3_000_000, pump)
    assert got // PAYLOAD > 2 * rate * 2 * delay / 1e6  # the ramp got somewhere
    assert limited <= total // 50, (limited, total)
    # bounded by what the sender used (BBR's startup overshoots this path's 12,000 packets of
    # BDP and queue, and the limit holds what arrives past its holes), not straight to the cap
    # (the sender's own flight may reach a third of the cap: past the holes of its overshoot)
    assert s.buffers["rcv_limit"] <= 3 * most_in_flight + 2 * 64, most_in_flight
    assert s.buffers["rcv_limit"] < CAP


class _PacedWideWindow(CongestionControl):
    """A sender its pacing holds back, with a window far larger than what it keeps in flight
    (UDT4's DAIMD on loopback: its window counts the 10 ms ACK period, the flight only the RTT)."""

    def init(self):
        self.period_us = 100.0  # 10,000 packets/s
        self.cwnd = 20_000

    def on_ack(self, ack):
        self.period_us = 100.0
        self.cwnd = 20_000


def test_a_paced_sender_buffers_twice_its_flight_not_twice_its_window():
    """The send limit grows for what is unacknowledged when that is less than the window: twice
    a 20,000-packet window queued 58 MB the writer wrote long before it was sent (out of every
    cache); the flight here is a few hundred packets, so the initial limit holds the pipe."""
    net = Net(seed=3, profile=LinkProfile(delay_us=5000), reverse=LinkProfile(delay_us=5000))
    caps = {"snd_buf": CAP, "rcv_buf": CAP, "ffs": CAP}
    net, c, s = connected_pair(net, client_options={"cc": _PacedWideWindow(), **caps}, server_options=dict(caps))
    most_in_flight = 0
    got = 0
    block = bytes(PAYLOAD * 16)

    def pump() -> bool:
        nonlocal most_in_flight, got
        while c.write(block, net.now) > 0:
            pass
        most_in_flight = max(most_in_flight, (c.snd_next_seq - c.snd_una) % (1 << 31))
        while not isinstance(r := s.read(1 << 20, net.now), int) and r:
            got += len(r)
        return False

    net.run(2_000_000, pump)
    assert got // PAYLOAD > 0.9 * 2 * 10_000  # the pacing, not the buffer, sets the rate
    assert c.cwnd == 20_000 and most_in_flight < INITIAL_SEND // 4
    assert c.buffers["snd_limit"] == INITIAL_SEND  # not 2 x 20,000


class _PacedFast(CongestionControl):
    """A sender paced at 200,000 packets/s with a window it never fills (loopback's DAIMD)."""

    def init(self):
        self.period_us = 5.0
        self.cwnd = 100_000

    def on_ack(self, ack):
        self.period_us = 5.0
        self.cwnd = 100_000


def test_a_short_fast_path_grows_the_receive_limit_for_its_rate_not_its_ack_clock():
    """The receive limit is checked at full ACKs, 10 ms apart, and its interval (RTT + 10 ms) is
    about 10 ms on a short path: the check came at twice the interval and the limit grew for
    two intervals' reading, 4.3 times what the path needs here (loopback at 1 GB/s: 40,000 of
    65,536 packets in 3 s, the cap with a stall).  Grown from the rate read, it stays within
    three times rate x (RTT + ACK period).  (The limit starts above that need, so the sender is
    never window-limited: loopback's growth from 7,000 to 40,000 packets came after its ramp.)"""
    rate, delay = 200_000, 100
    need = rate * (2 * delay + 10_000) // 1_000_000  # what the sender learns of one ACK late
    net = Net(seed=3, profile=LinkProfile(delay_us=delay), reverse=LinkProfile(delay_us=delay))
    caps = {"snd_buf": 131072, "rcv_buf": 131072, "ffs": 131072}
    server = dict(caps, buf_initial=2 * need)
    net, c, s = connected_pair(net, client_options={"cc": _PacedFast(), **caps}, server_options=server)
    got = pump_for(net, c, s, 0.6)
    assert got > 0.9 * rate * 0.6  # the pacing, not a window, sets the rate
    assert s.buffers["rcv_limit"] <= 3 * need + 2 * 64, (s.buffers["rcv_limit"], need)
    assert c.flow_window <= 3 * need + 2 * 64
