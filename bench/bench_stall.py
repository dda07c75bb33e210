#!/usr/bin/env python3
"""A receiver that waits for a core, on the lfn path: datagrams the kernel drops meanwhile.

    python bench/bench_stall.py [--runs 3] [--stop 0.3] [--at 6] [--seconds 12] [--cc bbr]

One udt flow (bench/_wan_workers.py) crosses the lfn path of bench_wan.py (1 Gbit/s, 200 ms,
0.01 % loss).  At ``--at`` seconds the receiving process is stopped (SIGSTOP) for ``--stop``
seconds, as a receive worker starved of CPU on a busy machine is.  What arrives meanwhile waits
in the kernel's UDP buffer; what does not fit is dropped there and counted in the receiving
namespace's ``RcvbufErrors`` (after the link: the link's counters never see it), and comes back
as retransmissions.  Prints, per run and as medians, those drops and the flow's Mbit/s.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _wan_link import open_link  # noqa: E402
from _wan_paths import PATHS  # noqa: E402

WORKERS = str(Path(__file__).resolve().parent / "_wan_workers.py")


def rcvbuf_errors(namespace: str) -> int:
    text = subprocess.run(
        ["ip", "netns", "exec", namespace, "cat", "/proc/net/snmp"], capture_output=True, text=True, check=True
    ).stdout
    names, values = (line.split()[1:] for line in text.splitlines() if line.startswith("Udp:"))
    return int(dict(zip(names, values))["RcvbufErrors"])


def run_once(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    seconds = str(args.seconds)
    with open_link(PATHS["lfn"], seed=seed) as link:
        namespace = link.wan.right_ns
        common = ["--seconds", seconds, "--cc", args.cc]
        recv = link.popen_receiver([sys.executable, WORKERS, "udt-recv", "--host", link.receiver_host, *common])
        assert recv.stdout is not None
        port = json.loads(recv.stdout.readline())["port"]
        send = link.popen_sender(
            [sys.executable, WORKERS, "udt-send", "--host", link.receiver_host, "--port", str(port), *common]
        )
        link.flows_started()
        time.sleep(args.at)
        before = rcvbuf_errors(namespace)
        os.kill(recv.pid, signal.SIGSTOP)  # `ip netns exec` execs the worker: this is its pid
        time.sleep(args.stop)
        os.kill(recv.pid, signal.SIGCONT)
        time.sleep(1.0)
        during = rcvbuf_errors(namespace) - before
        send.communicate(timeout=args.seconds + 60)
        out, _ = recv.communicate(timeout=60)
        total = rcvbuf_errors(namespace)
    done = next(json.loads(line) for line in out.splitlines() if '"done"' in line)
    return {
        "seed": seed,
        "rcvbuf_errors_stop": during,
        "rcvbuf_errors_total": total,
        "mbit_per_s": done["bytes"] * 8 / args.seconds / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stop", type=float, default=0.3, help="seconds the receiver is stopped")
    parser.add_argument("--at", type=float, default=6.0, help="when, seconds after the start")
    parser.add_argument("--seconds", type=float, default=12.0, help="length of the flow")
    parser.add_argument("--cc", default="bbr", help="udt congestion control")
    parser.add_argument("--json", metavar="FILE", help="write the runs here")
    args = parser.parse_args(argv)
    runs = []
    for i in range(args.runs):
        runs.append(run_once(args, seed=1 + i))
        r = runs[-1]
        print(
            f"run {i + 1}: {r['rcvbuf_errors_stop']} dropped during the stop, "
            f"{r['rcvbuf_errors_total']} in all, {r['mbit_per_s']:.1f} Mbit/s",
            flush=True,
        )
    summary = {key: statistics.median(r[key] for r in runs) for key in runs[0] if key != "seed"}
    print("median: " + ", ".join(f"{key} {value:g}" for key, value in summary.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs, "median": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
