"""The workers batch a stream instead of waking per datagram (udt/_muxcore.pyx send_heap_key, the
receive worker's nap in udt/_pool.pyx): a paced sender's send worker wakes once per several
packets, and on a long path the receiving worker finds several datagrams per wake-up.  Counted
with the multiplexer's wake-up counters, never timed (the speed is bench/bench_lfn.py's).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

import udt
from loopback_pair import connected_pair
from udt.tools.wan import LinkSpec, WanLink
from udt.tools.wan.netns import unavailable_reason


def _stream(client: udt.socket, conn: udt.socket, size: int) -> None:
    """Send size bytes from client to conn and check they all arrived."""
    got = 0

    def read() -> None:
        nonlocal got
        buf = bytearray(1 << 20)
        while got < size:
            n = conn.recv_into(buf)
            if not n:
                return
            got += n

    reader = threading.Thread(target=read)
    reader.start()
    client.sendall(bytes(size))
    client.flush()
    reader.join(timeout=60)
    assert got == size


def test_paced_sends_wake_the_send_worker_once_per_batch():
    # 25 MB/s paces a packet every ~60 µs: the send worker used to wake for each one or two; now
    # a wake-up may come 500 µs late and sends the ~8 packets due by then in one burst
    with connected_pair({udt.UDT_MAXBW: 25_000_000, udt.UDT_MSS: 1500}) as (client, conn):
        before = client.perfmon()
        _stream(client, conn, 8 << 20)
        after = client.perfmon()
    sent = after["pkt_sent_total"] - before["pkt_sent_total"]
    wakeups = after["mux_send_wakeups"] - before["mux_send_wakeups"]
    assert sent >= (8 << 20) // 1500  # the MSS stayed 1500 (UDT_MSS turns path-MTU discovery off)
    assert wakeups > 0
    assert sent / wakeups >= 5, f"{sent} packets in {wakeups} send-worker wake-ups"


RECEIVER = """
import json, udt
s = udt.socket(); s.bind(("0.0.0.0", 9000)); s.listen(1)
print("ready", flush=True)
conn, _ = s.accept(); buf = bytearray(1 << 20); total = 0
while n := conn.recv_into(buf):  # to the sender's close: its last bytes are acknowledged
    total += n
stats = conn.perfmon()
print(json.dumps({"bytes": total, "packets": stats["pkt_recv_total"],
                  "wakeups": stats["mux_receive_wakeups"]}), flush=True)
conn.close(); s.close()
"""
SENDER = """
import sys, udt
s = udt.create_connection((sys.argv[1], 9000), timeout=10)
s.sendall(bytes(int(sys.argv[2]))); s.flush(); s.close()
"""


@pytest.mark.netns
@pytest.mark.slow
def test_receive_worker_finds_batches_on_a_long_path():
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"WAN link unavailable: {reason}")
    size = 60 << 20
    with WanLink(LinkSpec(rate="800Mbit", delay_ms=20)) as wan:
        receiver = wan.popen_right([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
        sender = wan.run_left(
            [sys.executable, "-c", SENDER, wan.right_addr, str(size)], capture_output=True, text=True, timeout=120
        )
        assert sender.returncode == 0, sender.stderr
        out, _ = receiver.communicate(timeout=60)
    result = json.loads(out.splitlines()[-1])
    assert result["bytes"] == size
    # the link delivers a few datagrams per 50 µs tick: without the nap a wake-up found about 9
    # (two runs: 8.5, 8.8); napping 1/64 RTT (40 ms here: 500 µs, the cap) it finds 48-71
    assert result["packets"] / result["wakeups"] >= 20, result
