"""The WAN link emulator (``udt.tools.wan``): the shaper on a fake clock, then real namespaces.

Tolerances: the link's UDP output within −10 %/+3 % of the rate (IP bytes), TCP goodput 85–100 %;
delay within +1 ms of 2 × one-way (RTT) and never below it; random loss within 4.5 binomial
standard deviations; counters agree with what the probes saw up to a few packets (the kernel's
own IPv6 chatter crosses the link too).
"""

from __future__ import annotations

import json
import math
import statistics
import struct
import subprocess
import sys
import time
from shutil import which

import pytest

from udt.tools.wan import GilbertElliott, LinkSpec, WanLink
from udt.tools.wan import _link as link
from udt.tools.wan._link import Verdict
from udt.tools.wan.netns import unavailable_reason
from udt.tools.wan.spec import parse_duration_ms, parse_fraction

MS = 1_000_000


def ipv4(length: int, tag: int = 0) -> bytes:
    """A minimal IPv4 packet of *length* bytes whose payload starts with *tag*."""
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, 0, 0, 64, 17, 0, b"\n\0\0\1", b"\n\0\0\2")
    return header + struct.pack("!I", tag) + bytes(length - 24)


def shaper(rate: float = 8e6, **kwargs) -> link.Shaper:
    kwargs.setdefault("queue_ns", 1000 * MS)
    return link.Shaper("test", rate, **kwargs)


def offer_and_drain(s: link.Shaper, now: int) -> int:
    verdict = s.offer(now, ipv4(100))
    s.pop_due(now)
    return verdict


# -- the shaper on a fake clock ---------------------------------------------------------------


def test_serialisation_then_delay_in_order_and_intact():
    s = shaper(8e6, delay_ns=5 * MS)  # 8 Mbit/s: one 1000-byte packet per ms
    for tag in range(10):
        assert s.offer(0, ipv4(1000, tag)) == Verdict.ADMITTED
    assert s.pop_due(6 * MS - 1) == []
    assert s.next_due_ns() == 6 * MS
    out = s.pop_due(8 * MS)
    assert [struct.unpack_from("!I", p, 20)[0] for p in out] == [0, 1, 2]
    assert out[0] == ipv4(1000, 0)
    assert len(s.pop_due(100 * MS)) == 7
    c = s.counters()
    assert (c["delivered"], c["delivered_bytes"], c["in_link"]) == (10, 10_000, 0)
    assert c["queue_delay_ms_max"] == pytest.approx(9.0)
    assert c["queue_delay_ms_mean"] == pytest.approx(4.5)


def test_drop_tail_in_time_and_in_packets():
    s = shaper(8e6, queue_ns=3 * MS)
    verdicts = [s.offer(0, ipv4(1000)) for _ in range(6)]
    assert verdicts == [Verdict.ADMITTED] * 3 + [Verdict.QUEUE_DROP] * 3
    assert s.offer(1 * MS, ipv4(1000)) == Verdict.ADMITTED  # one packet left the queue
    p = shaper(8e6, queue_ns=0, queue_packets=2)
    assert [p.offer(0, ipv4(1000)) for _ in range(4)] == [Verdict.ADMITTED] * 2 + [Verdict.QUEUE_DROP] * 2
    assert p.offer(1 * MS, ipv4(1000)) == Verdict.ADMITTED
    assert p.counters()["queue_drops"] == 2


def test_random_loss_is_binomial_and_seeded():
    n, p = 100_000, 0.03
    runs = []
    for seed in (7, 7, 8):
        s = shaper(1e9, queue_ns=10 * MS, loss=p, seed=seed)
        runs.append([offer_and_drain(s, i * 1000) for i in range(n)])
    assert runs[0] == runs[1] and runs[0] != runs[2]
    drops = runs[0].count(Verdict.RANDOM_DROP)
    assert abs(drops - n * p) < 4.5 * math.sqrt(n * p * (1 - p))


def test_gilbert_elliott_mean_loss_and_burst_length():
    ge = GilbertElliott.from_mean(0.01, 4.0)
    assert ge.mean_loss == pytest.approx(0.01)
    s = shaper(1e9, queue_ns=10 * MS, ge=ge.as_tuple(), seed=3)
    verdicts = [offer_and_drain(s, i * 1000) == Verdict.GE_DROP for i in range(400_000)]
    losses = sum(verdicts)
    bursts = sum(1 for a, b in zip([False, *verdicts], verdicts) if b and not a)
    assert losses / len(verdicts) == pytest.approx(0.01, rel=0.15)
    assert losses / bursts == pytest.approx(4.0, rel=0.15)
    assert s.counters()["ge_drops"] == losses


def test_schedule_and_set_rate_change_the_serialisation_time():
    s = shaper(8e6, schedule=[(1.0, 4e6)])
    s.start_schedule(0)
    s.offer(0, ipv4(1000))
    assert s.next_due_ns() == 1 * MS
    s.offer(1000 * MS, ipv4(1000))
    assert s.next_due_ns() == 1 * MS and s.rate_bps == 4e6
    s.pop_due(1 * MS)
    assert s.next_due_ns() == 1002 * MS
    with pytest.raises(ValueError, match="sized for max_rate"):
        s.set_rate(9e6)
    s.set_rate(2e6)
    s.offer(2000 * MS, ipv4(1000))
    s.pop_due(1002 * MS)
    assert s.next_due_ns() == 2004 * MS
    s.start_schedule(3000 * MS)  # back to the first rate, the 4 Mbit/s entry to come
    assert s.rate_bps == 8e6
    s.offer(3000 * MS, ipv4(1000))
    s.offer(4000 * MS, ipv4(1000))
    assert s.rate_bps == 4e6


def test_jitter_stays_in_bounds_and_never_reorders():
    s = shaper(1e9, queue_ns=10 * MS, delay_ns=20 * MS, jitter_ns=5 * MS, seed=5)
    for i in range(2000):
        s.offer(i * MS // 10, ipv4(100, i))  # 0.1 ms apart, jitter ±5 ms: would reorder
    out = s.pop_due(10_000 * MS)
    assert [struct.unpack_from("!I", p, 20)[0] for p in out] == list(range(2000))
    t = shaper(1e9, queue_ns=10 * MS, delay_ns=20 * MS, jitter_ns=5 * MS, seed=5)
    delays = []
    for i in range(200):
        t.offer(i * 50 * MS, ipv4(100))  # far apart: the no-reordering clamp never applies
        delays.append(t.next_due_ns() - i * 50 * MS)
        t.pop_due(i * 50 * MS + 30 * MS)
    assert 15 * MS <= min(delays) < 16 * MS and 24 * MS < max(delays) <= 25 * MS


def test_garbage_and_bad_settings():
    s = shaper()
    assert s.offer(0, b"\x45" + bytes(30)) == Verdict.INVALID  # length field disagrees
    assert s.offer(0, b"hello, not ip at all") == Verdict.INVALID
    assert s.counters()["invalid"] == 2 and s.counters()["delivered"] == 0
    with pytest.raises(ValueError, match="above the mtu"):
        s.offer(0, ipv4(1600))
    with pytest.raises(ValueError, match="queue limit"):
        link.Shaper("x", 1e6)
    with pytest.raises(ValueError, match="loss"):
        link.Shaper("x", 1e6, queue_ns=MS, loss=1.5)
    with pytest.raises(ValueError, match="rate"):
        LinkSpec(rate="100M")
    with pytest.raises(ValueError, match="delay_ms"):
        LinkSpec(rate="1Mbit", delay_ms=-1)
    assert parse_duration_ms("1.5s") == 1500 and parse_fraction("1%") == 0.01
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms("50")


# -- real namespaces --------------------------------------------------------------------------

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 7000))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048); s.sendto(data, peer)
"""
RTT = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.0)
rtts = []
for i in range(int(sys.argv[2])):
    t = time.monotonic(); s.sendto(b"%d" % i, (sys.argv[1], 7000))
    s.recv(2048); rtts.append((time.monotonic() - t) * 1e3); time.sleep(0.01)
print(json.dumps(rtts))
"""
# Counts datagrams until 3 s of silence.  Under the suite's load this process may not run for
# a while: the forced 8 MB buffer holds the whole burst meanwhile (the default one overflowed,
# and those kernel drops read as link loss), and a 1 s silence was once only a stall.
COUNT = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 7001))
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root)
print("ready", flush=True); n = 0
s.settimeout(5.0); s.recv(2048); n += 1; s.settimeout(3.0)
try:
    while True:
        s.recv(2048); n += 1
except TimeoutError:
    print(n)
"""
SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[2])):
    s.sendto(b"x" * 200, (sys.argv[1], 7001))
    if i % 50 == 49: time.sleep(0.002)
"""


@pytest.fixture(scope="module")
def can_build():
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"WAN link unavailable: {reason}")


def iperf3_or_skip():
    if which("iperf3") is None:
        pytest.skip("iperf3 not installed")


def ready(process: subprocess.Popen) -> subprocess.Popen:
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def py(*argv: str) -> list[str]:
    return [sys.executable, "-c", *argv]


def iperf3(wan: WanLink, *args: str, i: int = 0, port: int = 5201) -> dict:
    wan.popen_right(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    argv = ["iperf3", "-c", wan.right_addr, "-p", str(port), "-J", *args]
    result = wan.run_left(argv, i=i, capture_output=True, text=True, timeout=60)
    report = json.loads(result.stdout)
    assert "error" not in report, report["error"]
    return report["end"]


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.mark.netns
def test_rtt_is_twice_the_one_way_delay(can_build):
    with WanLink(LinkSpec(rate="100Mbit", delay_ms=20)) as wan:
        ready(wan.popen_right(py(ECHO), stdout=subprocess.PIPE, text=True))
        out = wan.run_left(py(RTT, wan.right_addr, "40"), capture_output=True, text=True, timeout=30)
        rtts = json.loads(out.stdout)
    # the ping's two Python processes and four TUN/veth crossings add about 0.7 ms on a quiet
    # machine (minimum 40.69-40.74 ms, median 40.95-40.98 over three runs): the minimum shows
    # the link's delay, the median how much the suite's load adds (41.12 once in CI)
    assert 40.0 <= min(rtts) <= 41.0
    assert statistics.median(rtts) <= 41.5


@pytest.mark.netns
def test_random_loss_matches_setting_and_counters(can_build):
    n, p = 4000, 0.05
    with WanLink(LinkSpec(rate="100Mbit", loss=p, seed=11), LinkSpec(rate="100Mbit")) as wan:
        counter = ready(wan.popen_right(py(COUNT), stdout=subprocess.PIPE, text=True))
        before = wan.counters()["forward"]
        udp_before = wan.udp_counters()["right"]
        wan.run_left(py(SEND, wan.right_addr, str(n)), check=True, timeout=30)
        received = int(counter.communicate(timeout=30)[0])
        after = wan.counters()["forward"]
        udp_after = wan.udp_counters()["right"]
    drops = after["random_drops"] - before["random_drops"]
    # the receiving end's kernel saw what the link delivered (and counts what its sockets dropped)
    arrived = (
        udp_after["InDatagrams"] + udp_after["RcvbufErrors"] - udp_before["InDatagrams"] - udp_before["RcvbufErrors"]
    )
    assert arrived >= received and arrived <= after["delivered"] - before["delivered"]
    assert abs((n - received) - n * p) < 4.5 * math.sqrt(n * p * (1 - p))
    assert abs(drops - (n - received)) <= 3
    assert after["queue_drops"] == 0


@pytest.mark.netns
def test_forwarder_cpu_time_is_the_threads_own(can_build):
    link = WanLink(LinkSpec(rate="100Mbit"))
    with pytest.raises(RuntimeError, match="not running"):
        link.forwarder_cpu_seconds()
    with link as wan:
        started = time.monotonic()
        idle = wan.forwarder_cpu_seconds()
        counter = ready(wan.popen_right(py(COUNT), stdout=subprocess.PIPE, text=True))
        wan.run_left(py(SEND, wan.right_addr, "3000"), check=True, timeout=30)
        counter.communicate(timeout=30)
        busy = wan.forwarder_cpu_seconds()
        wall = time.monotonic() - started
    # 3000 packets cost the thread some CPU, never more than the time that passed
    assert 0 < busy - idle < wall


GSO_SEND = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_UDP, 103, 1000)  # UDP_SEGMENT: the kernel cuts 1000-byte datagrams
seq = 0
for batch in range(int(sys.argv[2])):
    data = b""
    for size in [1000] * 10 + [300]:
        data += struct.pack("!I", seq) + bytes([seq % 251]) * (size - 4); seq += 1
    s.sendto(data, (sys.argv[1], 7001)); time.sleep(0.002)
"""
GSO_COUNT = """
import socket, struct, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 7001)); print("ready", flush=True)
seqs, bad = [], 0
s.settimeout(5.0)
try:
    while True:
        data = s.recv(2048); s.settimeout(1.0)
        seq = struct.unpack_from("!I", data)[0]
        seqs.append(seq)
        bad += len(data) != (300 if seq % 11 == 10 else 1000) or data[4:] != bytes([seq % 251]) * (len(data) - 4)
except TimeoutError:
    print(len(seqs), bad, int(seqs == sorted(seqs)))
"""


@pytest.mark.netns
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_udp_gso_batches_cross_as_their_datagrams(can_build, family):
    """A UDP GSO sender's batch is read as one super-packet (segmentation offload on the TUNs)
    and cut back into its datagrams: each one judged and counted; those due together leave as
    one super-packet again, which the receiving stack cuts for a socket without UDP_GRO: every
    datagram arrives intact, in order, its size kept, with a checksum the stack accepts."""
    batches = 40
    with WanLink(LinkSpec(rate="1Gbit", delay_ms=1)) as wan:
        if not wan.offload:
            pytest.skip("no UDP segmentation offload on TUN here (kernel < 6.2)")
        right = wan.right_addr if family == "ipv4" else wan.right_addr6
        counter = ready(wan.popen_right(py(GSO_COUNT, right), stdout=subprocess.PIPE, text=True))
        before = wan.counters()["forward"]
        wan.run_left(py(GSO_SEND, right, str(batches)), check=True, timeout=30)
        received, bad, ordered = map(int, counter.communicate(timeout=30)[0].split())
        after = wan.counters()["forward"]
    assert (received, bad, ordered) == (batches * 11, 0, 1)
    assert after["invalid"] == before["invalid"] and after["queue_drops"] == 0
    # at 1 Gbit/s several datagrams of a batch fall due in one tick: they leave as one write
    assert after["gso_writes"] > before["gso_writes"]
    # the kernel's own IPv6 chatter crosses the link too
    assert 0 <= after["arrived"] - before["arrived"] - batches * 11 <= 3


@pytest.mark.netns
def test_gilbert_elliott_drops_are_counted(can_build):
    n = 3000
    ge = GilbertElliott.from_mean(0.05, 5.0)
    with WanLink(LinkSpec(rate="100Mbit", ge=ge, seed=2), LinkSpec(rate="100Mbit")) as wan:
        counter = ready(wan.popen_right(py(COUNT), stdout=subprocess.PIPE, text=True))
        wan.run_left(py(SEND, wan.right_addr, str(n)), check=True, timeout=30)
        received = int(counter.communicate(timeout=30)[0])
        c = wan.counters()["forward"]
    assert c["random_drops"] == 0 and c["ge_drops"] > 0
    assert abs(c["ge_drops"] - (n - received)) <= 3


@pytest.mark.netns
def test_udp_and_tcp_rate_at_100_mbit(can_build):
    iperf3_or_skip()
    with WanLink(LinkSpec(rate="100Mbit", delay_ms=2, queue_ms=50)) as wan:
        udp = iperf3(wan, "-u", "-b", "130M", "-l", "1400", "-t", "2")
        udp_counters = wan.counters()["forward"]
        tcp = iperf3(wan, "-t", "2", port=5202)
    # The link's own output (IP bytes) over the receiver's interval, which includes the queue's
    # drain; iperf3's own figure may be lower under load (its server's socket buffer drops).
    # Standalone it is within 3 %; under the suite's load the iperf3 client falls behind its
    # 130 Mbit/s at times and the queue runs dry (92 % seen), hence -10 %.
    output = udp_counters["delivered_bytes"] * 8 / udp["sum_received"]["seconds"]
    assert 0.90 * 100e6 <= output <= 1.03 * 100e6
    assert udp["sum_received"]["bits_per_second"] * 1428 / 1400 <= 101e6
    assert udp_counters["queue_drops"] > 0 and udp_counters["queue_delay_ms_max"] <= 51.0
    assert 0.85 * 100e6 <= tcp["sum_received"]["bits_per_second"] <= 100e6


@pytest.mark.netns
@pytest.mark.slow
def test_udp_rate_at_1_gbit(can_build):
    """The link carries min(offered, 1 Gbit/s).  Under the suite's load iperf3 may offer less
    (docs/tools.md has the standalone figure) and its server may drop what the link delivered
    (socket buffer), so the link's own counter is compared with what iperf3 sent."""
    iperf3_or_skip()
    with WanLink(LinkSpec(rate="1Gbit", delay_ms=2, queue_ms=20)) as wan:
        # On 2 shared cores the forwarder is sometimes descheduled for a whole run, and the
        # kernel drops at the TUN device what it could not hand over: such a run measures the
        # machine, not the link, so it is repeated (at most 3 runs); every run must still lose
        # nothing inside the link and stay under the rate.
        shortfalls = []
        for attempt in range(3):
            before = wan.counters()["forward"]
            udp = iperf3(wan, "-u", "-b", "1400M", "-l", "1400", "-t", "3", port=5210 + attempt)
            c = wan.counters()["forward"]
            offered = udp["sum_sent"]["bits_per_second"] * 1428 / 1400
            delivered = (c["delivered_bytes"] - before["delivered_bytes"]) * 8 / udp["sum_received"]["seconds"]
            assert delivered <= 1.01e9
            assert c["overflow_drops"] == 0 and c["write_errors"] == 0
            if delivered >= 0.95 * min(offered, 1e9):
                break
            shortfalls.append((offered, delivered))
        assert delivered >= 0.95 * min(offered, 1e9), shortfalls
        tcp = iperf3(wan, "-t", "2", port=5202)
        after_tcp = wan.counters()["forward"]
    # TCP: what the endpoints reach under load varies; the link must still cap it and lose nothing.
    assert 0 < tcp["sum_received"]["bits_per_second"] <= 1e9 * 1448 / 1500
    assert after_tcp["overflow_drops"] == 0 and after_tcp["write_errors"] == 0


@pytest.mark.netns
@pytest.mark.slow
def test_schedule_switches_rate(can_build):
    iperf3_or_skip()
    spec = LinkSpec(rate="40Mbit", queue_ms=50, schedule=[(2.0, "10Mbit")])
    with WanLink(spec, LinkSpec(rate="40Mbit")) as wan:
        wan.popen_right(["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
        time.sleep(0.3)
        client = wan.popen_left(
            ["iperf3", "-c", wan.right_addr, "-u", "-b", "60M", "-t", "4"], stdout=subprocess.DEVNULL
        )
        wan.restart_schedule()
        samples = []
        for _ in range(16):
            time.sleep(0.25)
            samples.append((time.monotonic(), wan.counters()["forward"]["delivered_bytes"]))
        client.wait(timeout=10)

    def rate(a: int, b: int) -> float:
        return (samples[b][1] - samples[a][1]) * 8 / (samples[b][0] - samples[a][0])

    assert rate(2, 6) == pytest.approx(40e6, rel=0.1)
    assert rate(10, 14) == pytest.approx(10e6, rel=0.1)


@pytest.mark.netns
@pytest.mark.slow
def test_dumbbell_senders_share_the_bottleneck(can_build):
    iperf3_or_skip()
    with WanLink(LinkSpec(rate="50Mbit", queue_ms=50), senders=2) as wan:
        assert wan.sender_addrs == ["10.78.0.2", "10.78.1.2"]
        for port in (5201, 5202):
            wan.popen_right(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        argv = ["iperf3", "-c", wan.right_addr, "-u", "-b", "40M", "-l", "1400", "-t", "3", "-J", "-p"]
        flows = [wan.popen_left([*argv, str(5201 + i)], i=i, stdout=subprocess.PIPE, text=True) for i in range(2)]
        ends = [json.loads(flow.communicate(timeout=30)[0])["end"] for flow in flows]
        c = wan.counters()["forward"]
    received = [end["sum_received"]["bits_per_second"] for end in ends]
    assert sum(received) * 1428 / 1400 == pytest.approx(50e6, rel=0.05)
    # Both flows cross the one queue.  Not an equal split: two paced UDP senders into drop-tail
    # phase-lock (one run: 13 and 35 Mbit/s of 40 offered each), as drop-tail does.
    assert min(received) > 0.1 * sum(received)
    assert c["queue_drops"] > 0


@pytest.mark.netns
def test_namespaces_removed_after_exit_and_exception(can_build):
    with WanLink(LinkSpec(rate="10Mbit"), senders=2) as wan:
        made = [wan.left_ns, wan.right_ns, *wan.sender_ns]
        assert all(name in namespaces() for name in made)
        sleeper = wan.popen_right(["sleep", "60"])
    assert sleeper.poll() is not None
    assert not any(name in namespaces() for name in made)
    with pytest.raises(RuntimeError, match="inside"):
        with WanLink(LinkSpec(rate="10Mbit")) as wan:
            made = [wan.left_ns, wan.right_ns]
            raise RuntimeError("inside the block")
    assert not any(name in namespaces() for name in made)


@pytest.mark.netns
def test_shell_entry_point_runs_a_command_with_the_names(can_build):
    command = 'ip netns list | grep -c "$WAN_RIGHT_NS"; echo "$WAN_RIGHT_ADDR"'
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "udt.tools.wan",
            "--rate",
            "20Mbit",
            "--delay",
            "5ms",
            "--loss",
            "1%",
            "--",
            "sh",
            "-c",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["1", "10.77.0.2"]
    assert json.loads("\n".join(lines[2:]))["forward"]["rate_bps"] == 20e6


@pytest.mark.netns
def test_namespaces_of_a_dead_process_are_swept(can_build):
    """A bench killed by SIGKILL leaves its namespaces; the next link removes them, and only them."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan, alive = f"wan-{gone.pid}-0-left", "wan-1-0-left"  # pid 1 always runs
    for name in (orphan, alive):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with WanLink(LinkSpec(rate="100Mbit")):
            listed = namespaces()
        assert orphan not in listed
        assert alive in namespaces()
    finally:
        for name in (orphan, alive):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
