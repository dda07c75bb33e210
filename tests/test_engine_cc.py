"""Congestion control: the native DAIMD (protocol.md §7) and a Python subclass through the trampoline."""

from __future__ import annotations

import sys

import pytest

from engine_harness import LinkProfile, Net, connected_pair, transfer
from test_engine_acks import CLIENT_ID, ISN, client, send_until
from udt import _testing
from udt.cc import CongestionControl


def full_ack(ack, ack_no, rate=0, bw=0, rtt=10_000, var=1_000, window=8000):
    return _testing.encode_control(2, ack_no, CLIENT_ID, [ack, rtt, var, window, rate, bw])


def test_slow_start_grows_window_then_leaves_at_max_window():
    c = client(ffs=25600)
    c.write(b"x" * 1456 * 400, 0)
    assert c.slow_start and c.cwnd == 16
    send_until(c, 0, 1000)
    assert c.snd_next_seq == ISN + 16  # window-limited in slow start
    c.receive(full_ack(ISN + 16, 1, rate=5000, bw=20000), 20_000)
    assert c.slow_start and c.cwnd == 32
    send_until(c, 20_000, 21_000)
    assert c.snd_next_seq == ISN + 16 + 32  # in flight counts from the ACK point
    # past the maximum window (the peer's flight flag size, 8192 here) slow start ends
    t, ack_no = 30_000, 2
    while c.slow_start and ack_no < 400:
        send_until(c, t, t + 100)
        c.write(b"x" * 1456 * 400, t)
        c.receive(full_ack(c.snd_next_seq, ack_no, rate=5000, bw=20000), t + 10_001)
        t += 10_002
        ack_no += 1
    assert not c.slow_start and c.cwnd > 16
    assert c.period_us <= 1e6 / c.delivery_rate  # from the receive rate, then increased


def test_loss_leaves_slow_start_and_grows_period():
    c = client()
    c.write(b"x" * 1456 * 100, 0)
    send_until(c, 0, 100)
    c.receive(full_ack(ISN + 8, 1, rate=10_000, bw=50_000), 20_000)
    assert c.slow_start
    c.receive(_testing.encode_control(3, 0, CLIENT_ID, [ISN + 9]), 21_000)
    assert not c.slow_start
    # the period after slow start comes from the receive rate (smoothed: (7*16 + 10000)/8)
    rate = (7 * 16 + 10_000) // 8
    assert c.period_us == pytest.approx(1e6 / rate)
    # a new loss beyond the last decrease: period x 1.125
    send_until(c, 21_000, 400_000)
    before = c.period_us
    c.receive(_testing.encode_control(3, 0, CLIENT_ID, [c.snd_next_seq - 1]), 400_001)
    assert c.period_us == pytest.approx(before * 1.125)


def test_a_loss_epoch_lasts_at_least_one_rate_control_interval():
    """On a path whose RTT is far below the 10 ms SYN, every NAK would start a new epoch (a
    decrease per packet round trip) while increases come once per 10 ms: random loss would
    pin the rate.  NAKs within 10 ms of an epoch's start count in that epoch, which allows
    itself at most 5 decreases."""
    c = client(buf_initial=8192)  # all 4000 packets queued at once: a fixed send buffer
    c.write(b"x" * 1456 * 4000, 0)
    send_until(c, 0, 100)
    c.receive(full_ack(ISN + 8, 1, rate=1_000_000, bw=5_000_000), 20_000)
    c.receive(_testing.encode_control(3, 0, CLIENT_ID, [ISN + 9]), 20_500)  # leaves slow start
    assert not c.slow_start
    c.set_cc(cwnd=10_000)  # the window never limits here: only the period
    t = 21_000
    before = c.period_us
    for _ in range(7):  # each NAK names a packet sent after the last one
        newest = c.snd_next_seq
        send_until(c, t, t + 900)
        assert c.snd_next_seq > newest, "the test needs a new packet between NAKs"
        c.receive(_testing.encode_control(3, 0, CLIENT_ID, [c.snd_next_seq - 1]), t + 1000)
        t += 1000
    assert c.period_us == pytest.approx(before * 1.125**5)  # 7 NAKs, one epoch
    newest = c.snd_next_seq
    send_until(c, t, 31_500)
    assert c.snd_next_seq > newest
    before = c.period_us
    c.receive(_testing.encode_control(3, 0, CLIENT_ID, [c.snd_next_seq - 1]), 32_000)
    assert c.period_us == pytest.approx(before * 1.125)  # 11 ms on: a new epoch


def test_clean_acks_shorten_the_period():
    c = client()
    c.write(b"x" * 1456 * 2000, 0)
    send_until(c, 0, 100)
    c.receive(full_ack(ISN + 8, 1, rate=5000, bw=100_000), 20_000)
    c.receive(_testing.encode_control(3, 0, CLIENT_ID, [ISN + 9]), 20_500)
    periods = [c.period_us]
    t = 20_500
    ack_no = 2
    for _ in range(20):
        send_until(c, t, t + 10_000)
        t += 10_001
        c.receive(full_ack(c.snd_next_seq, ack_no, rate=5000, bw=100_000), t)
        ack_no += 1
        periods.append(c.period_us)
    assert all(b < a for a, b in zip(periods[1:], periods[2:]))
    assert periods[-1] < periods[0] * 0.9


def test_rate_control_at_most_once_per_10ms():
    c = client()
    c.write(b"x" * 1456 * 100, 0)
    send_until(c, 0, 100)
    c.receive(full_ack(ISN + 4, 1, rate=5000, bw=100_000), 20_000)
    w = c.cwnd
    c.receive(full_ack(ISN + 8, 2, rate=5000, bw=100_000), 25_000)
    assert c.cwnd == w
    c.receive(full_ack(ISN + 8, 3, rate=5000, bw=100_000), 31_000)
    assert c.cwnd > w


def test_bottleneck_sender_backs_off_then_climbs_again():
    """A 5000 packets/s bottleneck with a 100-packet queue: slow start overshoots, the losses
    push the period up (×1.125 per decrease), then clean ACKs shorten it again; the transfer
    never collapses into retransmissions."""
    net = Net(seed=21, profile=LinkProfile(delay_us=10_000, rate_pps=5000, queue_packets=100))
    net, c, s = connected_pair(net)
    data = bytes(6 * 1024 * 1024)
    periods = []
    got = bytearray()
    off = 0

    def pump():
        nonlocal off
        while off < len(data) and (n := c.write(data[off : off + 65536], net.now)) > 0:
            off += n
        while not isinstance(r := s.read(1 << 20, net.now), int) and r:
            got.extend(r)
        if not c.slow_start:
            periods.append(c.period_us)
        return len(got) == len(data)

    assert net.run(100_000_000, pump) and bytes(got) == data
    st = c.stats(net.now)
    assert st["pkt_snd_loss_total"] > 0  # the queue did overflow
    assert st["pkt_retrans_total"] < 0.1 * st["pkt_sent_total"]
    assert max(periods) > 1e6 / 5000  # backed off below the link rate
    assert periods[-1] < 0.9 * max(periods)  # and climbs back
    assert len(data) / 1456 / (net.now / 1e6) > 0.3 * 5000


def test_max_bandwidth_caps_the_rate():
    net, c, s = connected_pair(client_options={"max_bandwidth": 1_500_000})
    net.sent_log = []
    data = bytes(300 * 1456)
    transfer(net, c, s, data)
    times = [
        t for t, src, _, d in net.sent_log if not _testing.decode_packet(d)["control"] and src == ("10.0.0.1", 5000)
    ]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert sorted(gaps)[len(gaps) // 2] >= 999
    seconds = (times[-1] - times[0]) / 1e6
    assert len(times) * 1500 / seconds <= 1_500_000 * 1.01
    c.set_max_bandwidth(-1)
    assert c.stats(net.now)["us_pkt_snd_period"] < 1000


class FixedRate(CongestionControl):
    """A user algorithm: a fixed period, records every callback."""

    def __init__(self, period_us=200.0):
        super().__init__()
        self.calls: list = []
        self.fixed = period_us

    def init(self):
        self.calls.append(("init", self.mss, self.max_cwnd))
        self.period_us = self.fixed
        self.cwnd = 1000

    def on_ack(self, ack):
        self.calls.append(("ack", ack, self.rtt_us))
        self.period_us = self.fixed

    def on_loss(self, losses):
        self.calls.append(("loss", losses))

    def on_timeout(self):
        self.calls.append(("timeout",))

    def close(self):
        self.calls.append(("close",))


class CountingSent(FixedRate):
    def on_packet_sent(self, seq, size):
        self.calls.append(("sent", seq, size))


def test_python_cc_drives_the_engine():
    cc = FixedRate(200.0)
    refs = sys.getrefcount(cc)
    net = Net(seed=5, profile=LinkProfile(delay_us=3000, loss=0.02))
    net, c, s = connected_pair(net, client_options={"cc": cc})
    assert cc.calls[0] == ("init", 1500, 8192)
    net.sent_log = []
    data = bytes(500 * 1456)
    assert transfer(net, c, s, data) == data
    times = [
        t for t, src, _, d in net.sent_log if not _testing.decode_packet(d)["control"] and src == ("10.0.0.1", 5000)
    ]
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    assert gaps[len(gaps) // 2] == pytest.approx(200, abs=2)
    kinds = {k[0] for k in cc.calls}
    assert {"init", "ack", "loss"} <= kinds and "sent" not in kinds
    loss = next(k for k in cc.calls if k[0] == "loss")[1]
    assert all(isinstance(first, int) and first <= last for first, last in loss)
    del c, s, net
    import gc

    gc.collect()
    assert cc.calls[-1] == ("close",)
    assert sys.getrefcount(cc) == refs


def test_python_cc_per_packet_hook_only_when_overridden():
    cc = CountingSent(50.0)
    net, c, s = connected_pair(client_options={"cc": cc})
    transfer(net, c, s, bytes(20 * 1456))
    sent = [k for k in cc.calls if k[0] == "sent"]
    assert len(sent) == 20 and sent[0][2] == 1456


def test_python_cc_exception_does_not_break_the_connection():
    class Broken(CongestionControl):
        def on_ack(self, ack):
            raise RuntimeError("user bug")

    seen = []
    old = sys.unraisablehook
    sys.unraisablehook = lambda u: seen.append(u.exc_type)
    try:
        net, c, s = connected_pair(client_options={"cc": Broken()})
        data = bytes(200 * 1456)
        assert transfer(net, c, s, data) == data
    finally:
        sys.unraisablehook = old
    assert RuntimeError in seen


def test_congestion_warning_slows_down():
    c = client()
    before = c.period_us
    c.receive(_testing.encode_control(4, 0, CLIENT_ID), 100)
    assert c.period_us == pytest.approx(before * 1.125)


def test_loss_or_timeout_before_the_first_ack_keeps_slow_start():
    """A NAK or an EXP before any full ACK says nothing about the path (UDT4 NAKs the packet that
    completed its rendezvous, and drops what came before): slow start goes on, the window
    still caps the flight at 16, and the first ACK grows it as usual."""
    c = client()
    c.write(b"x" * 1456 * 200, 0)
    send_until(c, 0, 100)
    c.receive(_testing.encode_control(3, 0, CLIENT_ID, [ISN]), 200)
    assert c.slow_start and c.period_us == 1.0
    assert [p["seq"] for p in send_until(c, 200, 300)] == [ISN]
    t = c.next_timer()
    c.on_timer(t)  # EXP: everything unacknowledged resent
    assert c.slow_start and c.period_us == 1.0
    resent = send_until(c, t, t + 100)
    assert [p["seq"] for p in resent] == list(range(ISN, ISN + 16))  # at once, not paced
    c.receive(full_ack(ISN + 16, 1, rate=0, bw=0), t + 20_000)
    assert c.slow_start and c.cwnd == 32


def test_loss_after_an_ack_without_rate_uses_the_window_formula():
    """After an ACK (4 words: no receive rate yet) a NAK ends slow start; the period comes from
    (RTT + RC) / cwnd, not from the 16 packets/s placeholder or UDT4's inverted formula."""
    c = client()
    c.write(b"x" * 1456 * 100, 0)
    send_until(c, 0, 100)
    c.receive(_testing.encode_control(2, 1, CLIENT_ID, [ISN + 8, 10_000, 1_000, 8000]), 20_000)
    cwnd = c.cwnd
    c.receive(_testing.encode_control(3, 0, CLIENT_ID, [ISN + 9]), 21_000)
    assert not c.slow_start
    assert c.period_us == pytest.approx((10_000 + 10_000) / cwnd * 1.125)
