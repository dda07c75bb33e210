"""The systems bench_wan.py runs on each path: udt per controller, TCP bbr/cubic (iperf3), SRT
file mode (srt-file-transmit) and UDT4 (udt4py-ng), each as processes inside the link's namespaces.

A system's ``start`` launches its flows and returns them; ``Flow.wait`` collects what the
processes reported into receiver samples (``t``, cumulative ``bytes``) and sender samples
(``t``, ``sent``, ``retrans`` packets, ``rtt_ms``), from which the bench computes its figures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _wan_paths import WanPath, window_mbit

WORKERS = str(Path(__file__).resolve().parent / "_wan_workers.py")
TCP_MSS = 1448  # payload of a TCP segment at MTU 1500 with timestamps: packets from iperf3's bytes
PORT = 9100


class Skip(Exception):
    """This system cannot run here; the message says why."""


def _lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


class Flow:
    """One transfer: its processes and, after ``wait``, what they measured."""

    def __init__(self, label: str, duration: float) -> None:
        self.label = label
        self.duration = duration
        self.samples: list[dict[str, Any]] = []
        self.sender_samples: list[dict[str, Any]] = []
        self.bytes = 0
        self.seconds: float | None = None
        self.mbit_per_s = 0.0
        self.reported_mbit: float | None = None  # the tool's own figure, when it gives one
        self._waiters: list[Any] = []
        self.tcp_retrans: list[tuple[float, int, int]] = []  # (t, retransmits, bytes) per interval

    def wait(self, timeout: float) -> None:
        for waiter in self._waiters:
            waiter(timeout)
        if not self.samples or self.samples[-1]["bytes"] <= 0:
            raise RuntimeError(f"{self.label}: no data delivered")
        if self.reported_mbit is not None:
            self.mbit_per_s = self.reported_mbit
        elif self.seconds is None:  # a timed run: what arrived within the duration
            self.mbit_per_s = window_mbit(self.samples, 0.0, self.duration + 0.3) or 0.0
        else:
            self.mbit_per_s = self.bytes * 8 / self.seconds / 1e6

    def retrans_pct(self, *, after: float) -> float | None:
        if self.tcp_retrans:
            rows = [(r, b) for t, r, b in self.tcp_retrans if t > after]
            packets = sum(b for _r, b in rows) / TCP_MSS
            return 100.0 * sum(r for r, _b in rows) / packets if packets else None
        first = next((s for s in self.sender_samples if s["t"] >= after), None)
        last = self.sender_samples[-1] if self.sender_samples else None
        if first is None or last is None or last["sent"] <= first["sent"]:
            return None
        return 100.0 * (last["retrans"] - first["retrans"]) / (last["sent"] - first["sent"])


def _communicate(proc: subprocess.Popen, timeout: float, what: str) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"{what} timed out") from None
    if proc.returncode != 0:
        last = " | ".join((err or "").strip().splitlines()[-2:])  # the exception, not the traceback
        raise RuntimeError(f"{what} exited {proc.returncode}: {last[-300:]}")
    return out


def _ready_port(proc: subprocess.Popen, what: str) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        return int(json.loads(line)["port"])
    except (ValueError, KeyError):
        proc.kill()
        raise RuntimeError(f"{what} did not start: {line}{proc.stderr.read() if proc.stderr else ''}") from None


class System:
    name = ""
    kind = ""  # udt | tcp | srt | udt4: which paths run it (WanPath.only)

    def runs_on(self, path: WanPath) -> bool:
        if path.kind == "transfer" and self.kind == "srt":
            return False  # srt-file-transmit's timing covers its own start-up: not comparable
        return not path.only or self.kind in path.only

    def start(self, link: Any, path: WanPath, duration: float, work: Path) -> list[Flow]:
        raise NotImplementedError


class WorkerPair(System):
    """A receiver/sender pair of _wan_workers.py roles (udt or UDT4)."""

    def __init__(self, name: str, kind: str, role: str, cc: str | None = None) -> None:
        self.name, self.kind, self.role, self.cc = name, kind, role, cc

    def flow(self, link: Any, path: WanPath, duration: float, i: int = 0, label: str | None = None) -> Flow:
        flow = Flow(label or self.name, duration)
        extra = ["--cc", self.cc] if self.cc else []
        size = ["--bytes", str(path.transfer_bytes)] if path.kind == "transfer" else []
        recv = link.popen_receiver(
            [sys.executable, WORKERS, f"{self.role}-recv", "--host", link.receiver_host, "--seconds", str(duration)]
            + [*extra, *size]
        )
        port = _ready_port(recv, f"{self.name} receiver")
        send = link.popen_sender(
            [sys.executable, WORKERS, f"{self.role}-send", "--host", link.receiver_host, "--port", str(port)]
            + ["--seconds", str(duration), *extra, *size],
            i,
        )

        def wait(timeout: float) -> None:
            sent = _lines(_communicate(send, timeout, f"{self.name} sender"))
            got = _lines(_communicate(recv, 30, f"{self.name} receiver"))
            flow.sender_samples = [s for s in sent if s.get("event") == "sample"]
            flow.samples = [s for s in got if s.get("event") == "sample"]
            done = next((s for s in got if s.get("event") == "done"), {})
            flow.bytes = done.get("bytes", 0)
            if path.kind == "transfer":
                if flow.bytes != path.transfer_bytes:
                    raise RuntimeError(f"{self.name}: {flow.bytes} of {path.transfer_bytes} bytes delivered")
                flow.seconds = done["seconds"]

        flow._waiters.append(wait)
        return flow

    def start(self, link: Any, path: WanPath, duration: float, work: Path) -> list[Flow]:
        if path.kind == "pair":
            return [self.flow(link, path, duration, i, f"{self.name} #{i + 1}") for i in range(2)]
        flows = [self.flow(link, path, duration)]
        if path.kind == "tcpshare":
            flows.append(Iperf3("TCP cubic", "cubic").flow(link, path, duration, i=1))
        return flows


class Iperf3(System):
    kind = "tcp"

    def __init__(self, name: str, algorithm: str) -> None:
        self.name, self.algorithm = name, algorithm

    def flow(self, link: Any, path: WanPath, duration: float, i: int = 0) -> Flow:
        flow = Flow(self.name, duration)
        port = PORT + i
        server = link.popen_receiver(["iperf3", "-s", "-1", "--forceflush", "-B", link.receiver_host, "-p", str(port)])
        assert server.stdout is not None
        line = ""
        for _ in range(3):  # a rule, then "Server listening on PORT": the client may connect
            line = server.stdout.readline()
            if "listening" in line:
                break
        if "listening" not in line:
            server.kill()
            raise RuntimeError(f"iperf3 server did not start: {line}{server.communicate()[1][-300:]}")
        amount = ["-n", str(path.transfer_bytes)] if path.kind == "transfer" else ["-t", f"{duration:g}"]
        client = link.popen_sender(
            ["iperf3", "-c", link.receiver_host, "-p", str(port), "-C", self.algorithm, "-J", "-i", "0.25", *amount], i
        )

        def wait(timeout: float) -> None:
            report = json.loads(_communicate_any(client, timeout) or "{}")
            if "error" in report or "end" not in report:
                raise RuntimeError(f"iperf3 -C {self.algorithm}: {report.get('error', 'no report')}")
            _communicate_any(server, 10)
            total = 0
            flow.samples.append({"t": 0.0, "bytes": 0})
            for interval in report.get("intervals", []):
                s = interval["sum"]
                total += s["bytes"]
                flow.samples.append({"t": s["end"], "bytes": total})
                rtt = interval["streams"][0].get("rtt")
                flow.sender_samples.append({"t": s["end"], "rtt_ms": rtt / 1000 if rtt else None})
                flow.tcp_retrans.append((s["end"], s.get("retransmits", 0), s["bytes"]))
            received = report["end"]["sum_received"]
            flow.bytes = received["bytes"]
            if path.kind == "transfer":
                flow.seconds = report["end"]["sum_sent"]["seconds"]
            else:  # iperf3's own figure: what the server received over the run
                flow.reported_mbit = received["bits_per_second"] / 1e6

        flow._waiters.append(wait)
        return flow

    def start(self, link: Any, path: WanPath, duration: float, work: Path) -> list[Flow]:
        return [self.flow(link, path, duration)]


def _communicate_any(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, _err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _err = proc.communicate()
    return out or ""


class SrtFile(System):
    """srt-file-transmit (SRT file mode, UDT4 on the wire) sending a sparse file larger than the
    path can move in the duration; throughput is what the receiver wrote, sampled from disk."""

    name, kind = "SRT file mode", "srt"

    def start(self, link: Any, path: WanPath, duration: float, work: Path) -> list[Flow]:
        flow = Flow(self.name, duration)
        source = work / "srt-source.bin"
        with open(source, "wb") as f:  # sparse: costs no disk, SRT does not compress
            f.truncate(int(path.rate_mbit * 1e6 / 8 * (duration + 5)))
        spool = work / f"srt-spool-{time.monotonic_ns()}"
        spool.mkdir()
        recv = link.popen_receiver(
            ["srt-file-transmit", "-q", f"srt://:{PORT}?mode=listener&transtype=file", f"file://{spool}/out.bin"]
        )
        time.sleep(0.3)  # the listener binds; a caller before it would wait its connect timeout
        send = link.popen_sender(
            ["srt-file-transmit", "-q", f"file://{source}", f"srt://{link.receiver_host}:{PORT}?transtype=file"]
        )

        def written() -> int:
            return sum(p.stat().st_size for p in spool.rglob("*") if p.is_file())

        def wait(timeout: float) -> None:
            deadline = time.monotonic() + timeout
            start = None
            while time.monotonic() < deadline:
                size = written()
                now = time.monotonic()
                if start is None and size > 0:
                    start = now
                if start is not None:
                    flow.samples.append({"t": round(now - start, 3), "bytes": size})
                    if now - start >= duration:
                        break
                if recv.poll() is not None and send.poll() is not None:
                    break
                time.sleep(0.25)
            for proc in (send, recv):
                proc.kill()
                proc.communicate()
            flow.bytes = flow.samples[-1]["bytes"] if flow.samples else 0
            shutil.rmtree(spool, ignore_errors=True)
            source.unlink(missing_ok=True)

        flow._waiters.append(wait)
        return [flow]


def _udt_controllers() -> tuple[list[str], str, bool]:
    """(controller names, the default's name, whether names can be given to UDT_CC)."""
    import udt.cc

    available = getattr(udt.cc, "available", None)
    if available is None:
        return ["udt4"], "udt4", False
    names = list(available())
    return names, str(getattr(udt.cc, "DEFAULT_CC", names[0])), True


def _tcp_available(algorithm: str) -> str | None:
    if shutil.which("iperf3") is None:
        return "iperf3 not installed (apt-get install iperf3)"
    listed = Path("/proc/sys/net/ipv4/tcp_available_congestion_control")
    if listed.exists() and algorithm not in listed.read_text().split():
        # The kernel loads tcp_<algorithm> on demand for root; try it once.
        subprocess.run(["modprobe", f"tcp_{algorithm}"], capture_output=True, check=False)
        if algorithm not in listed.read_text().split():
            return f"the kernel offers no TCP {algorithm} ({listed.read_text().strip()})"
    return None


def discover_systems(wanted: list[str] | None) -> tuple[list[System], list[tuple[str, str]], str]:
    """What can run here: (systems, [(skipped name, why)], the name of udt's default system)."""
    names, default, by_name = _udt_controllers()
    systems: list[System] = [WorkerPair(f"udt {n}", "udt", "udt", n if by_name else None) for n in names]
    skipped: list[tuple[str, str]] = []
    for name, algorithm in (("TCP bbr", "bbr"), ("TCP cubic", "cubic")):
        reason = _tcp_available(algorithm)
        if reason:
            skipped.append((name, reason))
        else:
            systems.append(Iperf3(name, algorithm))
    if shutil.which("srt-file-transmit") is None:
        skipped.append(("SRT file mode", "srt-file-transmit not installed (apt-get install srt-tools)"))
    else:
        systems.append(SrtFile())
    probe = subprocess.run([sys.executable, "-c", "import udt4py"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        skipped.append(("UDT4", f"udt4py-ng not importable (pip install udt4py-ng): {probe.stderr.strip()[-120:]}"))
    else:
        systems.append(WorkerPair("UDT4 (udt4py)", "udt4", "udt4"))
    if wanted:
        systems = [s for s in systems if any(w in s.name.lower() for w in wanted)]
    if os.geteuid() != 0:
        raise SystemExit("bench_wan: network namespaces need root")
    return systems, skipped, f"udt {default}"
