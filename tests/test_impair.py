"""The impairment relay over real loopback sockets: what it does matches what it was told.

Tolerances: a count drawn ``n`` times with probability ``p`` must lie within 4.5 standard
deviations (``sqrt(n p (1 - p))``) of ``n p``; the seeds are fixed, so a run is reproducible, but
the bounds are what any seed satisfies with probability > 99.999 %.
"""

from __future__ import annotations

import json
import math
import random
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from udt.tools.impair import (
    DirectionStats,
    DropNth,
    GilbertElliott,
    Impairment,
    Relay,
    RelayError,
    UdtControl,
    parse_address,
    parse_burst,
    parse_duration,
    parse_interval,
    parse_probability,
    parse_queue,
)
from udt.units import parse_rate_bps

ROOT = Path(__file__).resolve().parent.parent
SOL_UDP, UDP_SEGMENT = 17, 103
SO_RCVBUFFORCE = 33


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


HAVE_IPV6 = _ipv6_available()


def endpoint(host: str = "127.0.0.1") -> socket.socket:
    """A bound UDP socket with a receive buffer large enough that loopback never drops."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    sock.bind((host, 0))
    sock.settimeout(5.0)
    return sock


@pytest.fixture
def ab():
    a, b = endpoint(), endpoint()
    yield a, b
    a.close()
    b.close()


SO_TIMESTAMPNS = 35


def recv_stamped(sock: socket.socket, size: int = 65536) -> tuple[bytes, float]:
    """A datagram and when the kernel received it (monotonic seconds): the arrival time even if
    this thread was busy, so the measurement is of the relay, not of the test's scheduling."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    data, ancillary, _flags, _addr = sock.recvmsg(size, socket.CMSG_SPACE(16))
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = struct.unpack_from("@qq", value)
            return data, seconds + nanoseconds * 1e-9 - (time.time() - time.monotonic())
    raise AssertionError("no receive timestamp")


def numbered(count: int, size: int = 64) -> list[bytes]:
    return [struct.pack("!I", i) + bytes(size - 4) for i in range(count)]


def seq(data: bytes) -> int:
    return struct.unpack_from("!I", data)[0]


def drain(sock: socket.socket, into: list[bytes]) -> None:
    sock.setblocking(False)
    try:
        while True:
            into.append(sock.recv(65536))
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5.0)


def burst_through(relay: Relay, a: socket.socket, b: socket.socket, payloads: list[bytes]) -> list[bytes]:
    """Send payloads from a through relay at once; what reached b once the relay held none."""
    for data in payloads:
        a.sendto(data, relay.address)
    received: list[bytes] = []
    while relay.stats().a_to_b.received < len(payloads) or relay.stats().a_to_b.in_flight:
        select.select([b], [], [], 0.01)
        drain(b, received)
    drain(b, received)
    return received


def transfer(
    relay: Relay, a: socket.socket, b: socket.socket, payloads: list[bytes], window: int = 256, timeout: float = 60.0
) -> list[bytes]:
    """Send ``payloads`` from A through the relay, at most ``window`` ahead of what the relay has
    read (so no socket buffer overflows and every loss is the relay's own); return what B
    received, in arrival order, once the relay holds nothing more."""
    got: list[bytes] = []
    sent = 0
    deadline = time.monotonic() + timeout
    before = relay.stats().a_to_b  # the relay may have carried earlier traffic
    while True:
        stats = relay.stats().a_to_b
        received = stats.received - before.received
        while sent < len(payloads) and sent - received < window:
            a.sendto(payloads[sent], relay.address)
            sent += 1
        drain(b, got)
        if (
            sent == len(payloads)
            and received == sent
            and stats.in_flight == 0
            and len(got) >= stats.forwarded - before.forwarded
        ):
            return got
        assert time.monotonic() < deadline, f"transfer stuck: sent {sent}, {stats}"
        select.select([b], [], [], 0.005)


def within_binomial(count: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


# --------------------------------------------------------------------------- pass-through


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_pass_through_is_byte_exact_both_directions(host, process):
    if ":" in host and not HAVE_IPV6:
        pytest.skip("no IPv6 loopback here")
    rng = random.Random(5)
    biggest = 65507 if ":" not in host else 65527
    sizes = [0, 1, 2, 16, 1456, 1500, 9000, biggest]
    payloads = [rng.randbytes(size) for size in sizes]
    a, b = endpoint(host), endpoint(host)
    try:
        with Relay(b.getsockname(), (host, 0), process=process) as relay:
            assert relay.address[0] == host
            for data in payloads:
                a.sendto(data, relay.address)
                got, via = b.recvfrom(65536)
                assert got == data
                b.sendto(data[::-1], via)  # reply to the relay's per-client socket
                back, source = a.recvfrom(65536)
                assert back == data[::-1]
                assert source[:2] == relay.address[:2]
            stats = relay.stats()
        for direction in (stats.a_to_b, stats.b_to_a):
            assert direction.received == direction.forwarded == len(sizes)
            assert direction.bytes_in == direction.bytes_out == sum(sizes)
            assert direction.dropped == direction.duplicated == direction.corrupted == 0
        assert stats.clients == 1
    finally:
        a.close()
        b.close()


def test_relays_between_address_families():
    """A on IPv4, B on IPv6: the relay's socket towards B follows B's family."""
    if not HAVE_IPV6:
        pytest.skip("no IPv6 loopback here")
    a, b = endpoint("127.0.0.1"), endpoint("::1")
    try:
        with Relay(b.getsockname(), ("127.0.0.1", 0)) as relay:
            a.sendto(b"v4 to v6", relay.address)
            data, via = b.recvfrom(20)
            assert data == b"v4 to v6" and via[0] == "::1"
            b.sendto(b"v6 to v4", via)
            assert a.recvfrom(20) == (b"v6 to v4", relay.address)
    finally:
        a.close()
        b.close()


def test_gso_batches_from_the_sender_arrive_as_the_original_datagrams(ab):
    """A GSO sender (as udt is) hands the relay one buffer with many datagrams (GRO); B must
    still see every datagram separately and unchanged, and the relay's own GSO sends too."""
    a, b = ab
    segment = 1200
    block = [struct.pack("!I", i) + random.Random(i).randbytes(segment - 4) for i in range(20)]
    block[-1] = block[-1][:700]  # GSO allows a shorter last segment
    gso = [(SOL_UDP, UDP_SEGMENT, segment.to_bytes(2, sys.byteorder))]
    with Relay(b.getsockname()) as relay:
        a.sendmsg(block, gso, 0, relay.address)
        got = []
        for _ in block:
            data, via = b.recvfrom(65536)
            got.append(data)
        assert got == block
        b.sendmsg(block[::-1], [], 0, via)  # one datagram: B -> A
        assert a.recv(65536) == b"".join(block[::-1])
        b.sendmsg(block, gso, 0, via)
        assert [a.recv(65536) for _ in block] == block
        stats = relay.stats()
    assert stats.a_to_b.received == stats.a_to_b.forwarded == len(block)
    assert stats.b_to_a.received == stats.b_to_a.forwarded == len(block) + 1


def test_relay_survives_a_target_that_is_not_listening():
    closed = endpoint()
    target = closed.getsockname()
    closed.close()
    a = endpoint()
    try:
        with Relay(target) as relay:
            for _ in range(5):
                a.sendto(b"into the void", relay.address)
            deadline = time.monotonic() + 5
            while relay.stats().a_to_b.received < 5:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            stats = relay.stats().a_to_b
            # The first send succeeds (the ICMP error comes later); later ones may fail, counted.
            assert stats.forwarded + stats.dropped_send == 5
    finally:
        a.close()


# --------------------------------------------------------------------------- loss


@pytest.mark.parametrize("p", [0.01, 0.05, 0.20])
def test_bernoulli_loss_matches_the_setting(ab, p):
    a, b = ab
    n = 4000
    with Relay(b.getsockname(), a_to_b=Impairment(loss=p), seed=11) as relay:
        got = transfer(relay, a, b, numbered(n))
        stats = relay.stats().a_to_b
    lost = n - len(got)
    assert stats.dropped_loss == lost
    assert stats.forwarded == len(got)
    assert sorted(map(seq, got)) == [seq(x) for x in got], "loss must not reorder"
    assert within_binomial(lost, n, p), f"lost {lost} of {n}, expected {n * p:.0f}"


def loss_runs(received: list[int], n: int) -> list[int]:
    """Lengths of the runs of consecutive missing sequence numbers."""
    present = set(received)
    runs, current = [], 0
    for i in range(n):
        if i in present:
            if current:
                runs.append(current)
            current = 0
        else:
            current += 1
    if current:
        runs.append(current)
    return runs


@pytest.mark.slow
def test_gilbert_elliott_loses_in_bursts_of_the_set_mean_length(ab):
    a, b = ab
    n, mean_loss, mean_burst = 20000, 0.05, 4.0
    model = GilbertElliott.from_loss(mean_loss, mean_burst)
    assert model.mean_loss == pytest.approx(mean_loss)
    assert model.mean_burst == pytest.approx(mean_burst)
    with Relay(b.getsockname(), a_to_b=Impairment(burst=model), seed=3, process=True) as relay:
        got = transfer(relay, a, b, numbered(n, 32))
        stats = relay.stats().a_to_b
    runs = loss_runs([seq(x) for x in got], n)
    lost = sum(runs)
    assert stats.dropped_loss == lost
    # Bursts are geometric with mean 4 (sd sqrt(12)); the mean of ~250 of them: sd ~0.22.
    assert 3.0 <= statistics.mean(runs) <= 5.0, f"mean burst {statistics.mean(runs):.2f}"
    # The loss rate's variance is inflated by the bursts (by about 2 * burst - 1 = 7).
    assert abs(lost / n - mean_loss) <= 4.5 * math.sqrt(mean_loss * (1 - mean_loss) * 7 / n)
    print(f"\nGilbert-Elliott 5%/4: lost {lost / n:.2%} in {len(runs)} bursts, mean {statistics.mean(runs):.2f}")


def test_bernoulli_loss_does_not_come_in_bursts(ab):
    a, b = ab
    n = 4000
    with Relay(b.getsockname(), a_to_b=Impairment(loss=0.05), seed=3) as relay:
        got = transfer(relay, a, b, numbered(n, 32))
    runs = loss_runs([seq(x) for x in got], n)
    assert statistics.mean(runs) < 1.3  # geometric with mean 1 / 0.95


def test_same_seed_same_loss_pattern_other_seed_another(ab):
    a, b = ab
    n = 1000

    def lost_with(seed: int, **extra: float) -> set[int]:
        with Relay(b.getsockname(), a_to_b=Impairment(loss=0.2, **extra), seed=seed) as relay:
            got = transfer(relay, a, b, numbered(n))
        return set(range(n)) - {seq(x) for x in got}

    first = lost_with(42)
    assert lost_with(42) == first
    assert lost_with(43) != first
    # Each kind of decision has its own random stream: turning on jitter or duplication does
    # not change which datagrams are lost.
    assert lost_with(42, jitter=0.0005, duplicate=0.1) == first


# --------------------------------------------------------------------------- delay and jitter


def timed_payloads(count: int) -> list[bytes]:
    return [struct.pack("!Id", i, 0.0) for i in range(count)]


def measure_delays(
    relay: Relay, a: socket.socket, b: socket.socket, count: int, spacing: float
) -> list[tuple[int, float]]:
    """Send ``count`` stamped datagrams ``spacing`` apart; return (seq, one-way delay) per arrival."""
    arrivals: list[tuple[int, float]] = []
    b.settimeout(5.0)
    next_send = time.monotonic()
    for i in range(count):
        while time.monotonic() < next_send:
            readable, _, _ = select.select([b], [], [], max(0.0, next_send - time.monotonic()))
            if readable:
                data, arrived = recv_stamped(b, 64)
                arrivals.append((seq(data), arrived - struct.unpack_from("!d", data, 4)[0]))
        a.sendto(struct.pack("!Id", i, time.monotonic()), relay.address)
        next_send += spacing
    while len(arrivals) < count:
        data, arrived = recv_stamped(b, 64)
        arrivals.append((seq(data), arrived - struct.unpack_from("!d", data, 4)[0]))
    return arrivals


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_fixed_delay_is_accurate(ab, process):
    a, b = ab
    delay = 0.030
    with Relay(b.getsockname(), a_to_b=Impairment(delay=delay), process=process) as relay:
        arrivals = measure_delays(relay, a, b, 100, 0.003)
        stats = relay.stats().a_to_b
    delays = [d for _, d in arrivals]
    assert [s for s, _ in arrivals] == list(range(100))
    assert min(delays) >= delay - 0.0002, "a datagram left before its delay was up"
    median = statistics.median(delays)
    assert median <= delay + 0.002, f"median one-way delay {median * 1e3:.2f} ms for {delay * 1e3} ms"
    assert sorted(delays)[89] <= delay + 0.005
    assert stats.delay_min >= delay - 1e-6
    print(
        f"\ndelay {delay * 1e3} ms ({'process' if process else 'thread'}): measured min/median/max "
        f"{min(delays) * 1e3:.2f}/{median * 1e3:.2f}/{max(delays) * 1e3:.2f} ms"
    )


def test_jitter_spreads_delay_uniformly_within_bounds(ab):
    a, b = ab
    delay, jitter = 0.020, 0.004
    # Datagrams 10 ms apart (> 2 x jitter): FIFO never holds one back, so delays are uniform.
    with Relay(b.getsockname(), a_to_b=Impairment(delay=delay, jitter=jitter), seed=9) as relay:
        arrivals = measure_delays(relay, a, b, 150, 0.010)
    delays = [d for _, d in arrivals]
    assert min(delays) >= delay - jitter - 0.0002
    assert sorted(delays)[int(0.9 * len(delays))] <= delay + jitter + 0.003
    assert abs(statistics.mean(delays) - delay) <= 0.0015, f"mean {statistics.mean(delays) * 1e3:.2f} ms"
    # Uniform on ±4 ms has an interquartile range of 4 ms; a fixed delay would have ~0.  The
    # quartiles, not the standard deviation: one datagram a loaded host held back for 50 ms
    # would double the deviation (seen: 6.1 ms in a CI run) but moves a quartile by one rank.
    q1, _, q3 = statistics.quantiles(delays, n=4)
    assert 0.0025 <= q3 - q1 <= 0.0055, f"interquartile range {(q3 - q1) * 1e3:.2f} ms"
    print(f"\njitter 20±4 ms: mean {statistics.mean(delays) * 1e3:.2f} ms, IQR {(q3 - q1) * 1e3:.2f} ms")


def test_jitter_never_reorders(ab):
    a, b = ab
    with Relay(b.getsockname(), a_to_b=Impairment(delay=0.005, jitter=0.005), seed=2) as relay:
        got = transfer(relay, a, b, numbered(1000))
    assert [seq(x) for x in got] == list(range(1000))


# --------------------------------------------------------------------------- reorder, duplicate, corrupt


@pytest.mark.parametrize("distance", [1, 3])
def test_reordering_is_counted_and_visible_at_the_receiver(ab, distance):
    a, b = ab
    n, p = 2000, 0.05
    imp = Impairment(reorder=p, reorder_distance=distance)
    with Relay(b.getsockname(), a_to_b=imp, seed=4) as relay:
        got = transfer(relay, a, b, numbered(n))
        stats = relay.stats().a_to_b
    order = [seq(x) for x in got]
    assert sorted(order) == list(range(n)), "reordering must not lose or duplicate"
    assert within_binomial(stats.reordered, n, p)
    # A held-back datagram is overtaken by the next `distance` datagrams, so it arrives after
    # them (unless it was among the last few sent, released by its timeout instead).
    late = [s for i, s in enumerate(order) if i > 0 and s < max(order[:i])]
    assert stats.reordered - distance <= len(late) <= stats.reordered
    displacement = [order.index(s) - s for s in late]
    assert all(d >= distance - 1 for d in displacement) and max(displacement) >= distance


def test_held_back_datagram_is_released_by_its_timeout(ab):
    a, b = ab
    with Relay(b.getsockname(), a_to_b=Impairment(reorder=1.0, reorder_timeout=0.02)) as relay:
        start = time.monotonic()
        a.sendto(b"alone", relay.address)
        assert b.recv(64) == b"alone"
        assert time.monotonic() - start >= 0.02
        assert relay.stats().a_to_b.reordered == 1


def test_duplication_is_counted_and_visible_at_the_receiver(ab):
    a, b = ab
    n, p = 2000, 0.05
    with Relay(b.getsockname(), a_to_b=Impairment(duplicate=p), seed=6) as relay:
        got = transfer(relay, a, b, numbered(n))
        stats = relay.stats().a_to_b
    counts: dict[int, int] = {}
    for data in got:
        counts[seq(data)] = counts.get(seq(data), 0) + 1
    twice = [s for s, c in counts.items() if c == 2]
    assert set(counts) == set(range(n)) and max(counts.values()) == 2
    assert len(twice) == stats.duplicated == len(got) - n
    assert stats.forwarded == n + stats.duplicated
    assert within_binomial(stats.duplicated, n, p)
    # The copy follows the original at once (duplicate_delay=0).
    for s in twice[:20]:
        first = next(i for i, x in enumerate(got) if seq(x) == s)
        assert seq(got[first + 1]) == s


def test_delayed_duplicate_arrives_later(ab):
    a, b = ab
    with Relay(b.getsockname(), a_to_b=Impairment(duplicate=1.0, duplicate_delay=0.03)) as relay:
        a.sendto(b"twin", relay.address)
        assert b.recv(64) == b"twin"
        start = time.monotonic()
        assert b.recv(64) == b"twin"
        assert time.monotonic() - start >= 0.025


def test_corruption_flips_bits_and_keeps_lengths(ab):
    a, b = ab
    n, p, bits = 2000, 0.1, 3
    rng = random.Random(8)
    payloads = [struct.pack("!I", i) + rng.randbytes(rng.randrange(0, 300)) for i in range(n)]
    with Relay(b.getsockname(), a_to_b=Impairment(corrupt=p, corrupt_bits=bits), seed=8) as relay:
        got = transfer(relay, a, b, payloads)
        stats = relay.stats().a_to_b
    assert len(got) == n and [len(x) for x in got] == [len(x) for x in payloads]
    changed = [(x, y) for x, y in zip(payloads, got) if x != y]
    assert len(changed) == stats.corrupted
    assert within_binomial(stats.corrupted, n, p)
    for sent, received in changed:
        flipped = sum(bin(u ^ v).count("1") for u, v in zip(sent, received))
        assert flipped == bits


# --------------------------------------------------------------------------- rate and queue


def test_queue_overflow_drops_the_tail(ab):
    a, b = ab
    # 1 Mbit/s: a 1000-byte datagram takes 8 ms on the link; 100 sent in a burst of < 8 ms.
    imp = Impairment(rate=1e6, queue_packets=20)
    with Relay(b.getsockname(), a_to_b=imp) as relay:
        received = burst_through(relay, a, b, numbered(100, 1000))
        stats = relay.stats().a_to_b
    order = [seq(x) for x in received]
    kept = len(order)
    assert order == list(range(kept)), "drop-tail keeps the head of the burst, in order"
    assert 20 <= kept <= 22  # 20 queued, plus any that finished while the burst arrived
    assert stats.dropped_queue == 100 - kept


def test_queue_limit_in_bytes(ab):
    a, b = ab
    imp = Impairment(rate=1e6, queue_bytes=10_000)
    with Relay(b.getsockname(), a_to_b=imp) as relay:
        received = burst_through(relay, a, b, numbered(50, 1000))
    assert [seq(x) for x in received] == list(range(len(received)))
    assert 10 <= len(received) <= 12


def test_rate_limit_paces_a_short_burst(ab):
    """In-process check of serialization delay: 50 × 1250 bytes at 10 Mbit/s take 50 ms."""
    a, b = ab
    with Relay(b.getsockname(), a_to_b=Impairment(rate=10e6, queue_packets=100)) as relay:
        for data in numbered(50, 1250):
            a.sendto(data, relay.address)
        times = [recv_stamped(b, 2000)[1] for _ in range(50)]
    span = times[-1] - times[0]
    assert 0.049 * 0.9 <= span <= 0.049 * 1.25, f"49 gaps of 1 ms took {span * 1e3:.1f} ms"


RECEIVER = r"""
import json, socket, sys, time
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
try:
    s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE (root)
except OSError:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
s.bind((sys.argv[1], 0))
print(s.getsockname()[1], flush=True)
buf = bytearray(65536)
s.settimeout(10.0)
count = total = first_size = 0
first = last = 0.0
try:
    first_size = s.recv_into(buf); first = last = time.monotonic(); count = 1; total = first_size
    s.settimeout(0.5)
    while True:
        n = s.recv_into(buf); last = time.monotonic(); count += 1; total += n
except socket.timeout:
    pass
print(json.dumps({"packets": count, "bytes": total, "first_size": first_size, "span": last - first}), flush=True)
"""

SENDER = r"""
import json, socket, sys, time
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rate, duration, gso = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
payload, addr = bytes(size), (host, port)
per_second = rate / (8 * size)
start = time.monotonic(); end = start + duration; sent = 0
while True:
    now = time.monotonic()
    if now >= end:
        break
    due = int((now - start) * per_second) + 1
    while sent < due:
        k = min(gso or 1, due - sent)
        try:
            if gso:
                s.sendmsg([payload] * k, [(17, 103, size.to_bytes(2, sys.byteorder))], 0, addr)
            else:
                s.sendto(payload, addr)
        except OSError:
            pass
        sent += k
    time.sleep(0.0002)
print(json.dumps({"sent": sent}), flush=True)
"""


def run_rate(
    rate: float,
    size: int,
    gso: int,
    duration: float = 1.5,
    offered: float = 1.2,
    queue_time: float = 0.05,
    limit: bool = True,
) -> tuple[float, DirectionStats, dict]:
    """Offer ``offered`` × ``rate`` through a relay (child process) limited to ``rate``, from a
    sender process to a receiver process; return the receiver's measured rate in bit/s.

    The queue holds ``queue_time`` of traffic: a sender process on this shared machine is
    descheduled for milliseconds at a time and then catches up in a burst; a queue shorter than
    those gaps would (correctly) leave the link idle and measure the sender, not the relay."""
    queue_bytes = max(65536, int(rate * queue_time / 8))
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, "127.0.0.1"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(receiver.stdout.readline())
        imp = Impairment(rate=rate, queue_bytes=queue_bytes) if limit else Impairment()
        with Relay(("127.0.0.1", port), a_to_b=imp, process=True) as relay:
            sender = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    SENDER,
                    "127.0.0.1",
                    str(relay.address[1]),
                    str(size),
                    str(rate * offered),
                    str(duration),
                    str(gso),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            result = json.loads(receiver.stdout.readline())
            receiver.wait(timeout=10)
            stats = relay.stats().a_to_b
        result["sent"] = json.loads(sender.stdout)["sent"]
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
        receiver.stdout.close()
    measured = (result["bytes"] - result["first_size"]) * 8 / result["span"]
    return measured, stats, result


@pytest.mark.slow
@pytest.mark.parametrize(
    "rate,gso", [(10e6, 0), (100e6, 0), (500e6, 16)], ids=["10mbit", "100mbit", "500mbit-gso-sender"]
)
def test_rate_limit_throughput_matches_the_setting(rate, gso):
    """At 500 Mbit/s the sender batches with GSO (as udt does): a plain sendto sender costs the
    shared 2 cores enough that the relay is starved at times (measured 457-500 Mbit/s).

    The limiter is only measured when it was offered more than its rate: under the suite's load
    the relay process is at times starved (192 Mbit/s measured, relay received 35,097 of 76,013
    datagrams sent, 48 queue drops), and then the figure is the machine's, not the limiter's.
    Such a run is repeated, at most twice; the last run asserts everything, and every run that
    is measured at all must stay under the rate."""
    size = 1456
    for attempt in range(3):
        measured, stats, result = run_rate(rate, size, gso)
        print(
            f"\nrate {rate / 1e6:.0f} Mbit/s: measured {measured / 1e6:.1f} Mbit/s "
            f"({result['packets'] / result['span']:.0f} datagrams/s), sent {result['sent']}, "
            f"relay received {stats.received}, queue drops {stats.dropped_queue}"
        )
        assert measured <= 1.10 * rate, f"measured {measured / 1e6:.1f} Mbit/s for {rate / 1e6} Mbit/s"
        assert stats.forwarded == result["packets"]
        # Offered 1.2 × the rate: the excess (about 1/6 of what arrived) is dropped at the queue;
        # far fewer drops mean the relay never saw the offered load (it was descheduled).
        saturated = stats.dropped_queue > 0.05 * stats.received
        if saturated or attempt == 2:
            break
    assert abs(measured - rate) <= 0.10 * rate, f"measured {measured / 1e6:.1f} Mbit/s for {rate / 1e6} Mbit/s"
    assert saturated, f"queue drops {stats.dropped_queue} of {stats.received}: the limiter was never full"


@pytest.mark.slow
def test_pass_through_capacity_exceeds_500_mbit():
    """No limit, 1.5 Gbit/s offered by a GSO sender (as udt sends): what the relay forwards."""
    # A capacity is the best the relay does: a run in which it was descheduled (398 Mbit/s under
    # the suite's load, relay read 57,271 of 193,154 sent) measured the machine, so up to three.
    best = 0.0
    for _ in range(3):
        measured, stats, result = run_rate(1.5e9, 1456, 16, offered=1.0, limit=False)
        print(
            f"\npass-through: {measured / 1e6:.0f} Mbit/s, {result['packets'] / result['span']:.0f} datagrams/s "
            f"of 1456 bytes (relay read {stats.received} of {result['sent']} sent)"
        )
        best = max(best, measured)
        if best >= 500e6:
            break
    assert best >= 500e6, f"best of three runs {best / 1e6:.0f} Mbit/s"


# --------------------------------------------------------------------------- clients, filters, control


def test_several_a_side_clients_are_kept_apart():
    b = endpoint()
    clients = [endpoint() for _ in range(3)]
    try:
        with Relay(b.getsockname()) as relay:
            for i, a in enumerate(clients):
                a.sendto(f"hello from {i}".encode(), relay.address)
            seen = {}
            for _ in clients:
                data, via = b.recvfrom(100)
                seen[data] = via
            assert len(set(seen.values())) == 3, "each A must have its own socket towards B"
            for data, via in seen.items():
                b.sendto(b"reply to " + data, via)
            for i, a in enumerate(clients):
                assert a.recv(100) == f"reply to hello from {i}".encode()
            mapping = relay.clients()
            assert set(mapping) == {a.getsockname() for a in clients}
            assert set(mapping.values()) == set(seen.values())
            assert relay.stats().clients == 3
        for a in clients:  # nothing else arrived at any client
            a.setblocking(False)
            with pytest.raises(BlockingIOError):
                a.recv(100)
    finally:
        b.close()
        for a in clients:
            a.close()


def test_max_clients_rejects_newcomers():
    b, first, second = endpoint(), endpoint(), endpoint()
    try:
        with Relay(b.getsockname(), max_clients=1) as relay:
            first.sendto(b"one", relay.address)
            assert b.recv(10) == b"one"
            second.sendto(b"two", relay.address)
            first.sendto(b"three", relay.address)
            assert b.recv(10) == b"three"
            assert relay.stats().rejected_clients == 1
    finally:
        for s in (b, first, second):
            s.close()


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_changes_on_the_fly_take_effect(ab, process):
    a, b = ab
    with Relay(b.getsockname(), process=process) as relay:
        assert len(transfer(relay, a, b, numbered(50))) == 50
        relay.set_impairment("a_to_b", Impairment.cut())
        assert transfer(relay, a, b, numbered(50)) == []
        relay.set_impairment("a_to_b", Impairment(delay=0.02))
        start = time.monotonic()
        a.sendto(b"back", relay.address)
        assert b.recv(10) == b"back"
        assert time.monotonic() - start >= 0.02
        stats = relay.stats().a_to_b
    assert (stats.received, stats.forwarded, stats.dropped_loss) == (101, 51, 50)


def udt_control(kind: int) -> bytes:
    return struct.pack("!IIII", 0x80000000 | kind << 16, 0, 0, 7)


def udt_data(number: int) -> bytes:
    return struct.pack("!IIII", number, 0, 0, 7) + b"payload"


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_filters_pick_packets_deterministically(ab, process):
    a, b = ab
    traffic = [udt_data(0), udt_control(2), udt_data(1), udt_control(3), udt_control(2), udt_data(2)]
    # Drop the second ACK (type 2) only.
    imp = Impairment(drop=DropNth(1, where=UdtControl({2})))
    with Relay(b.getsockname(), a_to_b=imp, process=process) as relay:
        got = transfer(relay, a, b, traffic)
        assert got == [x for i, x in enumerate(traffic) if i != 4]
        # Lose every control packet, never a data packet.
        relay.set_impairment("a_to_b", Impairment(loss=1.0, applies_to=UdtControl()))
        got = transfer(relay, a, b, traffic)
        assert got == [udt_data(0), udt_data(1), udt_data(2)]
        # Drop the 3rd datagram from now on.
        relay.set_impairment("a_to_b", Impairment(drop=DropNth(2)))
        got = transfer(relay, a, b, traffic)
        assert got == traffic[:2] + traffic[3:]
        stats = relay.stats().a_to_b
    assert stats.dropped_filter == 2 and stats.dropped_loss == 3


def broken_predicate(data: bytes) -> bool:
    raise ZeroDivisionError("test predicate bug")


def test_a_failing_predicate_drops_and_counts_but_keeps_the_relay_alive(ab):
    a, b = ab
    with Relay(b.getsockname(), a_to_b=Impairment(drop=broken_predicate)) as relay:
        transfer(relay, a, b, numbered(3))
        relay.set_impairment("a_to_b", Impairment())
        assert transfer(relay, a, b, numbered(2)) == numbered(2)
        stats = relay.stats().a_to_b
    assert stats.filter_errors == 3 and stats.dropped_filter == 3


def test_process_mode_rejects_unpicklable_predicates(ab):
    _a, b = ab
    with pytest.raises(ValueError, match="picklable"):
        Relay(b.getsockname(), a_to_b=Impairment(drop=lambda data: True), process=True)
    with Relay(b.getsockname(), process=True) as relay:
        with pytest.raises(ValueError, match="picklable"):
            relay.set_impairment("a_to_b", Impairment(drop=lambda data: False))


def test_close_is_idempotent_and_keeps_the_final_counters(ab):
    a, b = ab
    relay = Relay(b.getsockname())
    a.sendto(b"x", relay.address)
    assert b.recv(10) == b"x"
    relay.close()
    relay.close()
    assert relay.stats().a_to_b.forwarded == 1
    with pytest.raises(RelayError):
        relay.set_impairment("a_to_b", Impairment())
    with pytest.raises(RelayError):
        relay.clients()


def test_bad_arguments_raise_value_error(ab):
    _a, b = ab
    target = b.getsockname()
    bad = [
        dict(loss=1.5),
        dict(loss=-0.1),
        dict(delay=-1.0),
        dict(jitter=math.nan),
        dict(rate=0),
        dict(queue_bytes=1000),
        dict(rate=1e6, queue_packets=0),
        dict(reorder_distance=0),
        dict(corrupt_bits=0),
        dict(drop="not callable"),
        dict(duplicate=True),
    ]
    for fields in bad:
        with pytest.raises(ValueError):
            Impairment(**fields)
    with pytest.raises(ValueError):
        GilbertElliott.from_loss(0.6, 1.0)  # would need p_good_to_bad = 1.5
    with pytest.raises(ValueError):
        GilbertElliott(0.1, 0.0)
    with pytest.raises(ValueError):
        Relay(target, a_to_b="lossy")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Relay(("127.0.0.1", 70000))
    with pytest.raises(ValueError):
        Relay(("no.such.host.invalid", 1))
    with Relay(target) as relay:
        with pytest.raises(ValueError):
            relay.set_impairment("sideways", Impairment())  # type: ignore[arg-type]
    with pytest.raises(OSError):  # the listen port is taken
        Relay(target, listen=target)
    with pytest.raises(OSError):
        Relay(target, listen=target, process=True)


# --------------------------------------------------------------------------- command line


def test_cli_value_parsers():
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1.5s") == 1.5 and parse_duration("500us") == pytest.approx(5e-4)
    assert parse_probability("1%") == pytest.approx(0.01) and parse_probability("0.25") == 0.25
    assert parse_rate_bps("100mbit") == 100e6 and parse_rate_bps("1gbit") == 1e9 and parse_rate_bps("1mbps") == 1e6
    assert parse_queue("256KB") == (256_000, None) and parse_queue("1000p") == (None, 1000)
    assert parse_queue("1MiB") == (1 << 20, None)
    assert parse_burst("5%,4").mean_burst == pytest.approx(4)
    assert parse_burst("ge:1%,25%,0,100%") == GilbertElliott(0.01, 0.25, 0.0, 1.0)
    assert parse_interval("1") == 1.0 and parse_interval("250ms") == pytest.approx(0.25)
    assert parse_address("[::1]:9000") == ("::1", 9000) and parse_address("127.0.0.1:1") == ("127.0.0.1", 1)
    for parser, text in [
        (parse_duration, "20"),
        (parse_duration, "fast"),
        (parse_probability, "150%"),
        (parse_rate_bps, "100"),
        (parse_rate_bps, "100mb"),
        (parse_queue, "lots"),
        (parse_burst, "5%"),
        (parse_address, "localhost"),
        (parse_address, "h:99999"),
        (parse_interval, "0"),
        (parse_interval, "soon"),
    ]:
        with pytest.raises(ValueError):
            parser(text)


@pytest.mark.parametrize("how", ["module", "script"])
def test_cli_relays_and_prints_counters_on_ctrl_c(ab, how):
    a, b = ab
    command = (
        [sys.executable, "-m", "udt.tools.impair"]
        if how == "module"
        else [sys.executable, str(ROOT / "src" / "udt" / "tools" / "impair" / "__main__.py")]
    )
    port = b.getsockname()[1]
    proc = subprocess.Popen(
        command
        + [
            "--listen",
            "127.0.0.1:0",
            "--target",
            f"127.0.0.1:{port}",
            "--delay",
            "5ms",
            "--loss",
            "0%",
            "--seed",
            "7",
            "--json",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = proc.stderr.readline()
        assert banner.startswith("impair: relaying 127.0.0.1:"), banner
        relay_port = int(banner.split()[2].rsplit(":", 1)[1])
        for i in range(5):
            a.sendto(b"cli %d" % i, ("127.0.0.1", relay_port))
            assert b.recv(20) == b"cli %d" % i
        proc.send_signal(signal.SIGINT)
        out, _err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    counters = json.loads(out.strip().splitlines()[-1])
    assert counters["a_to_b"]["received"] == counters["a_to_b"]["forwarded"] == 5
    assert counters["a_to_b"]["delay_min"] >= 0.005


def test_cli_shapes_each_direction_separately_over_ipv6():
    if not HAVE_IPV6:
        pytest.skip("no IPv6 loopback here")
    a, b = endpoint("::1"), endpoint("::1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "udt.tools.impair",
            "--listen",
            "[::1]:0",
            "--target",
            f"[::1]:{b.getsockname()[1]}",
            "--b-to-a-loss",
            "100%",
            "--stats-interval",
            "0.2",
            "--json",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = proc.stderr.readline()
        relay_port = int(banner.split()[2].rsplit(":", 1)[1])
        a.sendto(b"ping", ("::1", relay_port))
        data, via = b.recvfrom(10)
        assert data == b"ping"
        b.sendto(b"pong", via)  # lost: B->A loses everything
        periodic = json.loads(proc.stdout.readline())  # the --stats-interval report
        while periodic["b_to_a"]["received"] < 1:
            periodic = json.loads(proc.stdout.readline())
        assert periodic["b_to_a"]["dropped_loss"] == 1 and periodic["a_to_b"]["forwarded"] == 1
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        a.close()
        b.close()
    assert proc.returncode == 0


def test_cli_rejects_bad_values_clearly():
    proc = subprocess.run(
        [sys.executable, "-m", "udt.tools.impair", "--target", "127.0.0.1:9", "--loss", "150%"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "--loss" in proc.stderr and "150%" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "udt.tools.impair", "--target", "127.0.0.1:9", "--delay", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "needs a unit" in proc.stderr
