#!/usr/bin/env python3
"""The WAN link's own cost: forwarder CPU per packet and its output at a UDP offered rate.

    python bench/bench_wan_link.py [--rates 400,1000] [--link 1Gbit] [--runs 3] [--seconds 4] [--gso]

One ``udt.tools.wan.WanLink`` (``--link`` rate, 2 ms one-way delay, 20 ms queue) for the whole
run; per run and offered rate, ``iperf3 -u -b RATE -l 1400`` crosses it left to right.  Prints,
per run, the forwarder thread's CPU time over the packets it moved (both directions, read and
written), its share of a core, and the link's output (IP bytes delivered over the receiver's
interval) against what iperf3 offered; then medians per rate.  ``--gso`` sends with a paced
Python sender of 40-datagram UDP GSO batches instead (iperf3 alone tops out near 500 Mbit/s on
2 shared cores; the GSO sender reaches about 700); its output is taken over the sender's run.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from udt.tools.wan import LinkSpec, WanLink

IP_OVERHEAD = 28  # IPv4 + UDP header bytes on each 1400-byte iperf3 datagram
DATAGRAM = 1400


GSO_SENDER = """
import socket, sys, time
host, mbit, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_UDP, 103, 1400)  # UDP_SEGMENT: the kernel cuts 1400-byte datagrams
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
batch = bytes(1400 * 40)
interval = len(batch) * 8 * 1428 / 1400 / (mbit * 1e6)
start = time.monotonic()
sent = calls = 0
while (now := time.monotonic()) - start < seconds:
    if now < start + calls * interval:
        time.sleep(start + calls * interval - now)
    calls += 1
    try:
        s.sendto(batch, (host, 9))
        sent += 1
    except OSError:
        pass
print(sent * len(batch) * 8 * 1428 / 1400 / (time.monotonic() - start) / 1e6, time.monotonic() - start)
"""


def one_gso_run(wan: WanLink, mbit: int, seconds: float) -> dict[str, Any]:
    before = wan.counters()
    cpu_before = wan.forwarder_cpu_seconds()
    argv = [sys.executable, "-c", GSO_SENDER, wan.right_addr, str(mbit), str(seconds)]
    result = wan.run_left(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    time.sleep(0.03)  # the link's queue (at most 20 ms) drains
    cpu = wan.forwarder_cpu_seconds() - cpu_before
    after = wan.counters()
    offered, elapsed = (float(x) for x in result.stdout.split())
    return summary(before, after, cpu, offered, elapsed)


def summary(before: dict, after: dict, cpu: float, offered: float, seconds: float) -> dict[str, Any]:
    moved = sum(after[d]["arrived"] - before[d]["arrived"] for d in after)
    delivered = after["forward"]["delivered_bytes"] - before["forward"]["delivered_bytes"]
    return {
        "offered_mbit": offered,
        "output_mbit": delivered * 8 / seconds / 1e6,
        "packets": moved,
        "cpu_us_per_packet": cpu / moved * 1e6 if moved else float("nan"),
        "core_share": cpu / seconds,
        "queue_drops": after["forward"]["queue_drops"] - before["forward"]["queue_drops"],
        "overflow_drops": after["forward"]["overflow_drops"] - before["forward"]["overflow_drops"],
        "queue_delay_ms_max": after["forward"]["queue_delay_ms_max"],
    }


def one_run(wan: WanLink, mbit: int, seconds: float, port: int) -> dict[str, Any]:
    server = wan.popen_right(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    before = wan.counters()
    cpu_before = wan.forwarder_cpu_seconds()
    argv = ["iperf3", "-c", wan.right_addr, "-p", str(port), "-J", "-u", "-b", f"{mbit}M", "-l", str(DATAGRAM)]
    result = wan.run_left([*argv, "-t", str(seconds)], capture_output=True, text=True, timeout=seconds + 30)
    cpu = wan.forwarder_cpu_seconds() - cpu_before
    after = wan.counters()
    server.wait(timeout=10)
    end = json.loads(result.stdout)["end"]
    offered = end["sum_sent"]["bits_per_second"] * (DATAGRAM + IP_OVERHEAD) / DATAGRAM / 1e6
    return summary(before, after, cpu, offered, end["sum_received"]["seconds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="400,1000", help="offered Mbit/s, comma-separated")
    parser.add_argument("--link", default="1Gbit", help="the link's rate")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--gso", action="store_true", help="offer with the UDP GSO sender, not iperf3")
    parser.add_argument("--no-offload", action="store_true", help="TUNs without UDP segmentation offload")
    parser.add_argument("--json", help="write every run here")
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    runs: dict[int, list[dict[str, Any]]] = {rate: [] for rate in rates}
    port = 5300
    with WanLink(LinkSpec(rate=args.link, delay_ms=2, queue_ms=20), offload=not args.no_offload) as wan:
        for run in range(args.runs):
            for rate in rates:  # rates alternate within a run: the same load for each
                port += 1
                r = one_gso_run(wan, rate, args.seconds) if args.gso else one_run(wan, rate, args.seconds, port)
                runs[rate].append(r)
                print(
                    f"run {run + 1} offered {r['offered_mbit']:7.1f} Mbit/s  output {r['output_mbit']:7.1f}  "
                    f"{r['cpu_us_per_packet']:5.2f} us/packet  {r['core_share'] * 100:4.0f} % of a core  "
                    f"queue drops {r['queue_drops']}",
                    flush=True,
                )
    for rate in rates:
        rs = runs[rate]
        print(
            f"-b {rate}M: median offered {statistics.median(r['offered_mbit'] for r in rs):.1f}, "
            f"output {statistics.median(r['output_mbit'] for r in rs):.1f} Mbit/s, "
            f"{statistics.median(r['cpu_us_per_packet'] for r in rs):.2f} us/packet, "
            f"{statistics.median(r['core_share'] for r in rs) * 100:.0f} % of a core"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rates": rates, "runs": {str(k): v for k, v in runs.items()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
