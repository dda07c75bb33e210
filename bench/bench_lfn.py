#!/usr/bin/env python3
"""Who gets the CPU on the lfn path: one flow, the CPU of its sender, receiver and the link.

    python bench/bench_lfn.py [--rate 1000] [--seconds 20] [--runs 3] [--systems udt,tcp] [--cc bbr]

One flow crosses ``bench_wan.py``'s lfn path (200 ms RTT, 0.01 % loss each way, 100 ms queue)
at ``--rate`` Mbit/s: udt (``bench/_wan_workers.py``, controller ``--cc``) or TCP bbr
(``iperf3 -C bbr``, with the namespaces' ``tcp_rmem``/``tcp_wmem`` raised to 64 MB so that its
window, not its buffer, is what limits it).  Per run it prints the Mbit/s over the whole run and
after the first ``--ramp`` seconds (start-up excluded: a window that doubles per 200 ms round
needs about 2 s to reach 17,000 packets), and the CPU of each party in % of one core: the
sending and receiving process, the link's forwarder thread, and how much of the machine's two
cores was idle meanwhile (near 0: every party waits for a core), and how long the sending and
receiving processes' threads were runnable without a CPU.  ``--nice -5`` runs both ends ahead
of the machine's other jobs: what the flow reaches when it is not waiting for a core.  Then medians per system.
System kinds alternate within a run, so each sees the same load.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _wan_link import close_links_on_sigterm, open_link  # noqa: E402
from _wan_paths import PATHS  # noqa: E402

WORKERS = str(Path(__file__).resolve().parent / "_wan_workers.py")
TICK = os.sysconf("SC_CLK_TCK")
TCP_BUFFERS = "4096 131072 67108864"


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* (all its threads), 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def threads_schedstat(pid: int) -> dict[str, tuple[float, float, int]]:
    """Per thread of *pid* (by name and id): (seconds on a CPU, seconds runnable but waiting
    for one, times it was put on a CPU), from /proc/PID/task/TID/schedstat."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            run_ns, wait_ns, slices = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        out[f"{name}/{tid}"] = (int(run_ns) / 1e9, int(wait_ns) / 1e9, int(slices))
    return out


def idle_seconds() -> float:
    """Idle + iowait time of all CPUs (the first line of /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return (int(fields[3]) + int(fields[4])) / TICK


class CpuWatch:
    """The last CPU time seen of each process (they exit at the end of the run)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.last = dict(self.start)
        self.threads: dict[str, dict[str, tuple[float, float, int]]] = {name: {} for name in pids}

    def sample(self) -> None:
        for name, pid in self.pids.items():
            self.last[name] = max(self.last[name], cpu_seconds(pid))
            self.threads[name].update(threads_schedstat(pid))

    def waits(self) -> dict[str, float]:
        """Seconds each process's threads were runnable without a CPU, summed."""
        return {name: sum(t[1] for t in threads.values()) for name, threads in self.threads.items()}

    def used(self) -> dict[str, float]:
        return {name: self.last[name] - self.start[name] for name in self.pids}


SLOW_SHARE = 0.6  # an interval is slow when the sender sent less than this share of its pacing rate


def slow_reason(before: dict[str, Any], after: dict[str, Any], payload: int = 1456) -> str | None:
    """Why the udt sender sent less than SLOW_SHARE of its pacing rate between two of its samples
    (None: it did not), the first that holds at either end: "flow window" / "cwnd": the flight
    reached that window (after a loss burst the ACK point waits on the hole's repair); "send
    buffer": under 1000 packets unsent in a full buffer (full of unacknowledged ones); "writer":
    as few unsent with room in the buffer (the application was late); "cpu": the sender's
    threads waited for a CPU more than half the interval; else "other"."""
    dt = after["t"] - before["t"]
    if (
        dt <= 0
        or after["period_us"] <= 0
        or (after["sent"] - before["sent"]) / dt >= SLOW_SHARE * 1e6 / after["period_us"]
    ):
        return None
    ends = (before, after)
    if any(e["flight"] >= 0.9 * e["flow_window"] for e in ends):
        return "flow window"
    if any(e["flight"] >= 0.9 * e["cwnd"] for e in ends):
        return "cwnd"
    if min(e["snd_data"] / payload - e["flight"] for e in ends) < 1000:
        full = any(e["snd_buf_avail"] < 0.02 * (e["snd_buf_avail"] + e["snd_data"]) for e in ends)
        return "send buffer" if full else "writer"
    if "cpu_wait_s" in after and (after["cpu_wait_s"] - before["cpu_wait_s"]) / dt > 0.5:
        return "cpu"
    return "other"


def slow_intervals(samples: list[dict[str, Any]], after_t: float) -> dict[str, int]:
    """The sender's sample intervals after after_t (start-up left out): how many, and how many
    were slow for each slow_reason."""
    out: dict[str, int] = {"intervals": 0}
    for before, after in zip(samples, samples[1:]):
        if after["t"] <= after_t or after["t"] - before["t"] < 0.1:
            continue
        out["intervals"] += 1
        reason = slow_reason(before, after)
        if reason:
            out[reason] = out.get(reason, 0) + 1
    return out


class Drain:
    """A child's output, read while it runs.  The bench samples CPU meanwhile, and a child whose
    output outgrows the pipe (64 KiB: the udt sender's 0.25 s samples of a 20 s run come to
    61-65 KB, iperf3's JSON to more) blocked on its next write until the bench's timeout, 30 s
    after the run (and a run with longer samples would block within it)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.out = ""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        self.out, _ = self.proc.communicate()

    def result(self, timeout: float) -> str:
        """The whole stdout once the child has exited (TimeoutExpired if it has not)."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise subprocess.TimeoutExpired(self.proc.args, timeout)
        return self.out


def run_flow(link: Any, system: str, args: argparse.Namespace) -> tuple[list[tuple[float, float]], dict, float]:
    """Run one flow: its (time, bytes received) samples, CPU seconds per party, the run's seconds."""
    common = ["--seconds", str(args.seconds)]
    nice = ["nice", "-n", str(args.nice)] if args.nice else []
    if system == "udt":
        recv = link.popen_receiver(
            [*nice, sys.executable, WORKERS, "udt-recv", "--host", link.receiver_host, *common, "--cc", args.cc]
        )
        port = json.loads(recv.stdout.readline())["port"]
        send = link.popen_sender(
            [
                *nice,
                sys.executable,
                WORKERS,
                "udt-send",
                "--host",
                link.receiver_host,
                "--port",
                str(port),
                *common,
                "--cc",
                args.cc,
            ]
        )
    else:
        for ns in (link.wan.left_ns, link.wan.right_ns):
            for key in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"):
                subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={TCP_BUFFERS}"], check=True)
        recv = link.popen_receiver([*nice, "iperf3", "-s", "-1", "-p", "5201"])
        time.sleep(0.3)
        argv = ["iperf3", "-c", link.receiver_host, "-p", "5201", "-C", "bbr", "-J", "-i", "0.25"]
        send = link.popen_sender([*nice, *argv, "-t", str(args.seconds)])
    send_out, recv_out = Drain(send), Drain(recv)
    watch = CpuWatch({"sender": send.pid, "receiver": recv.pid})
    start = time.monotonic()
    cpu_link = link.wan.forwarder_cpu_seconds()
    while send.poll() is None and time.monotonic() - start < args.seconds + 30:
        watch.sample()
        time.sleep(0.2)
    watch.sample()
    cpu = {**watch.used(), "link": link.wan.forwarder_cpu_seconds() - cpu_link}
    cpu.update({f"{name} waiting": seconds for name, seconds in watch.waits().items()})
    out = send_out.result(60)
    received: list[tuple[float, float]] = []
    cpu["sender_samples"], cpu["receiver_samples"] = [], []
    if system == "udt":
        # both ends' samples (window, flight, buffer, writer's blocked time, CPU waits): --json keeps them
        cpu["sender_samples"] = [e for e in map(json.loads, out.splitlines()) if e.get("event") == "sample"]
        rout = recv_out.result(60)
        for line in rout.splitlines():
            event = json.loads(line)
            if event.get("event") == "sample":
                received.append((event["t"], event["bytes"]))
                cpu["receiver_samples"].append(event)
    else:
        recv_out.result(60)
        total = 0.0
        for interval in json.loads(out)["intervals"]:
            s = interval["sum"]
            total += s["bytes"]
            received.append((s["end"], total))
    cpu["threads"] = watch.threads
    return received, cpu, time.monotonic() - start


def one_run(system: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    path = dataclasses.replace(PATHS["lfn"], rate_mbit=args.rate)
    with open_link(path, seed=seed) as link:
        idle = idle_seconds()
        received, cpu, elapsed = run_flow(link, system, args)
        idle = idle_seconds() - idle
        counters = link.wan.counters()["forward"]
    total = max((b for t, b in received if t <= args.seconds), default=0.0)
    at_ramp = max((b for t, b in received if t <= args.ramp), default=0.0)
    threads = cpu.pop("threads")
    sender_samples = cpu.pop("sender_samples")
    receiver_samples = cpu.pop("receiver_samples")
    return {
        "threads": threads,
        "sender_samples": sender_samples,
        "receiver_samples": receiver_samples,
        "received": received,
        "slow_intervals": slow_intervals(sender_samples, args.ramp),
        "system": system,
        "seed": seed,
        "mbit_per_s": total * 8 / args.seconds / 1e6,
        "mbit_after_ramp": (total - at_ramp) * 8 / (args.seconds - args.ramp) / 1e6,
        "cpu_pct": {name: 100 * value / elapsed for name, value in cpu.items()},
        # CPU seconds per GB delivered: robust to the machine's load, unlike the Mbit/s
        "cpu_s_per_gb": {
            name: cpu[name] / (total / 1e9) if total else float("nan") for name in ("sender", "receiver", "link")
        },
        "idle_pct_of_2_cores": 100 * idle / elapsed / 2,
        "queue_drops": counters["queue_drops"],
        "random_drops": counters["random_drops"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000, help="link Mbit/s (lfn: 1000)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--ramp", type=float, default=3.0, help="seconds of start-up left out of mbit_after_ramp")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--systems", default="udt,tcp")
    parser.add_argument("--cc", default="bbr", help="udt's controller")
    parser.add_argument(
        "--nice", type=int, default=0, help="run both ends at this nice value (e.g. -5: ahead of other jobs)"
    )
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    close_links_on_sigterm()
    systems = args.systems.split(",")
    runs: list[dict[str, Any]] = []
    for i in range(args.runs):
        for system in systems:
            r = one_run(system, args, seed=1 + i)
            runs.append(r)
            cpu = ", ".join(f"{name} {value:.0f}" for name, value in r["cpu_pct"].items())
            print(
                f"run {i + 1} {system}: {r['mbit_per_s']:.1f} Mbit/s, {r['mbit_after_ramp']:.1f} after "
                f"{args.ramp:g} s; % of a core: {cpu}; idle {r['idle_pct_of_2_cores']:.0f} % of 2 cores; "
                f"queue drops {r['queue_drops']}; CPU s/GB: "
                + ", ".join(f"{name} {value:.2f}" for name, value in r["cpu_s_per_gb"].items()),
                flush=True,
            )
            if system == "udt":
                slow = dict(r["slow_intervals"])
                print(f"  sender intervals after the ramp: {slow.pop('intervals')}, slow: {slow or 'none'}", flush=True)
    for system in systems:
        rs = [r for r in runs if r["system"] == system]
        med = {key: statistics.median(r[key] for r in rs) for key in ("mbit_per_s", "mbit_after_ramp")}
        cpu = {name: statistics.median(r["cpu_pct"][name] for r in rs) for name in rs[0]["cpu_pct"]}
        per_gb = {name: statistics.median(r["cpu_s_per_gb"][name] for r in rs) for name in rs[0]["cpu_s_per_gb"]}
        print(
            f"{system}: median {med['mbit_per_s']:.1f} Mbit/s, {med['mbit_after_ramp']:.1f} after the ramp; "
            + ", ".join(f"{name} {value:.0f} %" for name, value in cpu.items())
            + "; CPU s/GB "
            + ", ".join(f"{name} {value:.2f}" for name, value in per_gb.items())
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
